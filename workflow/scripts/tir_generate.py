from ftlab.launch import as_plan, run_rule_stage
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
# One process (tir.eval.parallel model, or one GPU): generate runs right here, the model over
# the job's GPUs. Several (tir.eval.parallel data): in every process the launcher starts, each
# rank generating its shards; rank 0 merges them into the generations file.
plan = as_plan(snakemake.params.launch)
run_rule_stage(
    snakemake,
    "ftlab.tir.steps:generate",
    kwargs=dict(
        model_path=snakemake.params.model_path,
        rows_path=snakemake.input.rows,
        sampling=dict(snakemake.params.sampling),
        prompt_template=snakemake.params.prompt_template,
        backend=snakemake.params.backend,
        batch_size=snakemake.params.batch_size,
        seed=snakemake.params.seed,
        sandbox=dict(snakemake.params.sandbox),
        out_generations=snakemake.output.generations,
        out_info=snakemake.output.info,
        gpus=int(snakemake.resources.gpu),
        shard_size=snakemake.params.shard_size,
        threads=plan.threads if plan.launched else snakemake.threads,
    ),
)

# Provenance of this eval set's generation (git, host, versions, device, hashes, wall time) in
# its folder, as the other kinds' evaluations write theirs; also indexes it.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "evaluate", [snakemake.input.rows])
