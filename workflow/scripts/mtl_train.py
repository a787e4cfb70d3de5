from ftlab.mtl.steps import train_run
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
train_run(
    snakemake.input.train,
    snakemake.input.validation,
    snakemake.output.model,
    snakemake.params.state_dir,
    snakemake.threads,
    **snakemake.params.settings,
)
