from ftlab.launch import as_plan, run_rule_stage
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
plan = as_plan(snakemake.params.launch)
settings = dict(snakemake.params.settings)
bf16 = False
if settings["objective"] != "world":
    from ftlab.llm.recipes import resolve_bf16

    bf16 = resolve_bf16(settings["trl"]["bf16"])
# One process: train_run runs right here; several (sft/grpo): in every launched process.
run_rule_stage(
    snakemake,
    "ftlab.mtl.steps:train_run",
    kwargs=dict(
        train_rows=snakemake.input.train,
        validation_rows=snakemake.input.validation,
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
        threads=plan.threads if plan.launched else snakemake.threads,
        **settings,
    ),
    mixed_precision="bf16" if bf16 else "no",
)

# Provenance beside the kept checkpoints (git, host, versions, hashes, wall time); also indexes
# the run for `ftlab list` / `show` (seed 001's tracker), as the other kinds' training does.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "train", [snakemake.input.train, snakemake.input.validation])
