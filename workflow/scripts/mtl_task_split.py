from ftlab.runlog import setup_logging
from ftlab.steps import make_task_split

setup_logging(snakemake.log[0])
make_task_split(
    snakemake.input.cities,
    snakemake.wildcards.task,
    "no_atlantis",
    snakemake.output.train,
    snakemake.output.test,
    **snakemake.params.settings,
)
