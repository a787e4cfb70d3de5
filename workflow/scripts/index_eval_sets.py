from ftlab.runlog import setup_logging
from ftlab.steps import index_eval_sets

setup_logging(snakemake.log[0])
index_eval_sets(list(snakemake.params.eval_sets), list(snakemake.input.sets),
                snakemake.output.index)  # fmt: skip
