from ftlab.llm.steps import build_tiny_base
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
build_tiny_base(snakemake.params.seed, snakemake.output.checkpoint)
