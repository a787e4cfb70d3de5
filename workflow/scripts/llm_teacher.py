from ftlab.launch import as_plan, run_rule_stage
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
# One process (llm.teacher.parallel: model, or one GPU): right here, the model over all the
# job's GPUs; parallel: data with several GPUs: in every process the launcher starts, each
# rank generating its shards (rank 0 writes the records).
plan = as_plan(snakemake.params.launch)
run_rule_stage(
    snakemake,
    "ftlab.llm.steps:teacher_trajectories",
    kwargs=dict(
        teacher=snakemake.params.teacher,
        settings={
            **snakemake.params.settings,
            "parallel": "data" if plan.launched else "model",
        },
        fmt=snakemake.params.fmt,
        rows_path=snakemake.input.rows,
        out=snakemake.output.records,
        report=snakemake.output.report,
        shards_dir=snakemake.params.shards,
        gpus=snakemake.params.gpus,
        declared=snakemake.params.declared,
        declared_key=snakemake.params.declared_key,
        prompt_format=snakemake.params.prompt_format,
    ),
)
