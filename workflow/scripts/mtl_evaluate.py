from ftlab.mtl.steps import evaluate_checkpoint
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
evaluate_checkpoint(
    snakemake.params.checkpoint,
    dict(snakemake.params.test_sets),
    snakemake.output.metrics,
    snakemake.output.samples,
    snakemake.threads,
    snakemake.params.cache,
    **snakemake.params.settings,
)
