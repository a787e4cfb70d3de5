from ftlab.llm.steps import prepare_dataset
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
prepare_dataset(
    snakemake.config, snakemake.wildcards.dataset, snakemake.output.train, snakemake.output.test
)
