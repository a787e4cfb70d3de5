from ftlab.launch import run_rule_stage
from ftlab.llm.recipes import resolve_bf16
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
# One process: train_run runs right here; several: in every process the launcher starts.
recipe = dict(snakemake.params.recipe)
run_rule_stage(
    snakemake,
    "ftlab.llm.steps:train_run",
    kwargs=dict(
        run=dict(snakemake.params.run),
        recipe=recipe,
        base=snakemake.params.base,
        data_path=snakemake.input.data,
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
        study=snakemake.params.study,
        checkpoint_dtype=snakemake.params.checkpoint_dtype,
        prompt_format=snakemake.params.prompt_format,
    ),
    mixed_precision="bf16" if resolve_bf16(recipe.get("bf16")) else "no",
)

# Provenance beside the model (git, host, versions, hashes, wall time); also indexes the run.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "train", [snakemake.input.data])
