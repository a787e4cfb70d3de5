from ftlab.device import launcher_mixed_precision
from ftlab.launch import as_plan, run_rule_stage
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
plan = as_plan(snakemake.params.launch)
settings = dict(snakemake.params.settings)
# One process: train_model runs right here; several: each launched process runs it (DDP).
run_rule_stage(
    snakemake,
    "ftlab.steps:train_model",
    kwargs=dict(
        rows_path=snakemake.input.rows,
        init_checkpoint=snakemake.params.init_checkpoint,
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
        threads=plan.threads if plan.launched else snakemake.threads,
        **settings,
    ),
    mixed_precision=launcher_mixed_precision(settings["precision"]),
)

# Provenance beside the model (git, host, versions, hashes, wall time); also indexes the run.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(
    snakemake, "train", [snakemake.input.rows], device=dict(snakemake.params.settings).get("device")
)
