from ftlab.runlog import setup_logging
from ftlab.steps import evaluate_model

setup_logging(snakemake.log[0])
evaluate_model(
    snakemake.params.checkpoint,
    list(snakemake.params.eval_sets),
    list(snakemake.input.sets),
    list(snakemake.output.metrics),
    list(snakemake.output.samples),
    snakemake.threads,
    **snakemake.params.settings,
)
