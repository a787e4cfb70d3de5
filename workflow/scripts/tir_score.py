from ftlab.runlog import setup_logging
from ftlab.tir.steps import score

setup_logging(snakemake.log[0])
score(
    snakemake.input.generations,
    snakemake.input.rows,
    dict(snakemake.params.scorer),
    snakemake.output.scores,
    snakemake.output.scored,
)
