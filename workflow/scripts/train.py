from ftlab.runlog import setup_logging
from ftlab.steps import train_model

setup_logging(snakemake.log[0])
train_model(
    snakemake.input.rows,
    snakemake.params.init_checkpoint,
    snakemake.output.model,
    snakemake.params.state_dir,
    snakemake.threads,
    **snakemake.params.settings,
)
