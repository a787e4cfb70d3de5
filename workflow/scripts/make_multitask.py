from ftlab.steps import make_multitask, setup_logging

setup_logging(snakemake.log[0])
make_multitask(
    snakemake.config,
    list(snakemake.input.train),
    list(snakemake.input.test),
    snakemake.output.train,
    snakemake.output.test,
)
