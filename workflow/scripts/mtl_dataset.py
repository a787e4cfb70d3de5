from ftlab.mtl.steps import prepare_task_dataset
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
prepare_task_dataset(snakemake.wildcards.task, snakemake.output.rows, **snakemake.params.settings)
