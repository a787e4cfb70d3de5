from ftlab.llm.steps import teacher_trajectories
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
teacher_trajectories(
    snakemake.params.teacher,
    dict(snakemake.params.settings),
    snakemake.params.fmt,
    snakemake.input.rows,
    snakemake.output.records,
    snakemake.output.report,
    shards_dir=snakemake.params.shards,
    gpus=snakemake.params.gpus,
    declared=snakemake.params.declared,
    declared_key=snakemake.params.declared_key,
)
