from ftlab.llm.steps import build_tables
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
build_tables(
    list(snakemake.input.lm_eval),
    list(snakemake.input.in_domain),
    dict(snakemake.params.runs),
    {k: snakemake.output[k] for k in ("forgetting", "summary", "in_domain")},
    comparison_paths=list(snakemake.input.comparisons),
    confidence=snakemake.params.confidence,
)
