from ftlab.runlog import setup_logging
from ftlab.steps import make_multitask

setup_logging(snakemake.log[0])
make_multitask(
    list(snakemake.input.train),
    list(snakemake.input.test),
    snakemake.output.train,
    snakemake.output.test,
    **snakemake.params.settings,
)
