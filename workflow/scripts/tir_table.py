from ftlab.runlog import setup_logging
from ftlab.tir.steps import table

setup_logging(snakemake.log[0])
table(dict(snakemake.params.scores), snakemake.output.table)
