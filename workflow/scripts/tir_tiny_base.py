from ftlab.runlog import setup_logging
from ftlab.tir.steps import build_tiny_base

setup_logging(snakemake.log[0])
build_tiny_base(
    dict(snakemake.params.settings),
    snakemake.params.prompt_template,
    snakemake.params.seed,
    snakemake.output.checkpoint,
)
