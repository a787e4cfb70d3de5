from ftlab.llm.steps import plot
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
plot(
    snakemake.wildcards.which,
    {k: snakemake.input[k] for k in ("forgetting", "summary", "in_domain")},
    snakemake.output.plot,
    confidence=snakemake.params.confidence,
)
