from ftlab.llm.steps import train_run
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
train_run(
    snakemake.config,
    snakemake.wildcards.model,
    snakemake.params.base,
    snakemake.input.data,
    snakemake.output.model,
    snakemake.params.state_dir,
)
