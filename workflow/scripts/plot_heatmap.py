from ftlab.runlog import setup_logging
from ftlab.steps import plot_heatmap
from ftlab.study import Study

setup_logging(snakemake.log[0])
plot_heatmap(
    Study(snakemake.params.matrix),
    list(snakemake.input.evals),
    int(snakemake.wildcards.seed),
    snakemake.wildcards.kind,
    snakemake.output.plot,
)
