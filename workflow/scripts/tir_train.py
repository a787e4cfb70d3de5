from ftlab.launch import as_plan, run_rule_stage
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
# One process: train runs right here; several: in every process the launcher starts (rank 0
# resumes and publishes, as for the llm kind). bf16 on GPUs, as the trainer's own config
# (TIRRecipe.trl_config: bf16 whenever a GPU is present).
plan = as_plan(snakemake.params.launch)
run_rule_stage(
    snakemake,
    "ftlab.tir.steps:train",
    kwargs=dict(
        run=dict(snakemake.params.run),
        grpo=dict(snakemake.params.grpo),
        base_model=snakemake.params.base_model,
        rows_path=snakemake.input.rows,
        prompt_template=snakemake.params.prompt_template,
        sandbox=dict(snakemake.params.sandbox),
        scorer=dict(snakemake.params.scorer),
        seed=snakemake.params.seed,
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
    ),
    mixed_precision="bf16" if plan.gpus_per_node else "no",
)

# Provenance beside the checkpoints (git, host, versions, hashes, wall time); also indexes the
# run for `ftlab list` / `show` (seed 001's tracker), as the other kinds' training does.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "train", [snakemake.input.rows])
