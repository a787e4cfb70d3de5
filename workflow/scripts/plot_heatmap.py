from ftlab.steps import plot_heatmap, setup_logging

setup_logging(snakemake.log[0])
plot_heatmap(
    snakemake.config,
    list(snakemake.input.evals),
    int(snakemake.wildcards.seed),
    snakemake.wildcards.kind,
    snakemake.output.plot,
)
