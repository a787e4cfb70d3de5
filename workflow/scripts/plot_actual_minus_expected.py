from ftlab.steps import plot_actual_minus_expected, setup_logging

setup_logging(snakemake.log[0])
plot_actual_minus_expected(
    snakemake.config,
    list(snakemake.input.evals),
    int(snakemake.wildcards.seed),
    snakemake.output.plot,
)
