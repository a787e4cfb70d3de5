from ftlab.steps import make_task_split, setup_logging

setup_logging(snakemake.log[0])
make_task_split(
    snakemake.config,
    snakemake.input.cities,
    snakemake.wildcards.task,
    snakemake.wildcards.variant,
    snakemake.output.train,
    snakemake.output.test,
)
