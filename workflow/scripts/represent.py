from ftlab.runlog import setup_logging
from ftlab.steps import represent_model

setup_logging(snakemake.log[0])
represent_model(
    snakemake.params.checkpoint,
    snakemake.input.cities,
    snakemake.output.features,
    snakemake.output.probe,
    snakemake.threads,
    **snakemake.params.settings,
)
