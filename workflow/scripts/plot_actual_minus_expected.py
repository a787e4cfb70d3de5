from ftlab.runlog import setup_logging
from ftlab.steps import plot_actual_minus_expected
from ftlab.study import Study

setup_logging(snakemake.log[0])
plot_actual_minus_expected(
    Study(snakemake.params.matrix),
    list(snakemake.input.evals),
    int(snakemake.wildcards.seed),
    snakemake.output.plot,
)
