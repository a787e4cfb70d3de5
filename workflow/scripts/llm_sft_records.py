from ftlab.llm.steps import gt_sft_records
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
gt_sft_records(
    snakemake.input.rows,
    snakemake.output.records,
    fmt=snakemake.params.fmt,
    prompt_format=snakemake.params.prompt_format,
)
