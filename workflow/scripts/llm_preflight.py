from ftlab.llm.preflight import run_preflight
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
run_preflight(
    base_model=snakemake.params.base_model,
    datasets=dict(snakemake.params.datasets),
    data_root=snakemake.params.data_root,
    benchmarks=dict(snakemake.params.benchmarks),
    include_path=snakemake.params.include_path,
    teachers=dict(snakemake.params.teachers),
    out=snakemake.output.report,
)
