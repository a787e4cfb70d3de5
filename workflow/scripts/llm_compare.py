from ftlab.llm.steps import compare_point
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
compare_point(
    model_name=snakemake.wildcards.model,
    step=int(snakemake.wildcards.step),
    base_samples=snakemake.input.base,
    samples=snakemake.input.samples,
    benchmarks=dict(snakemake.params.benchmarks),
    stats=dict(snakemake.params.stats),
    out=snakemake.output.comparison,
)
