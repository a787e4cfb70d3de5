from ftlab.llm.steps import prepare_dataset
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
prepare_dataset(
    snakemake.wildcards.dataset,
    dict(snakemake.params.source),
    snakemake.params.data_root,
    snakemake.params.seed,
    snakemake.output.train,
    snakemake.output.test,
    snakemake.output.report,
)
