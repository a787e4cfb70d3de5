from ftlab.runlog import setup_logging
from ftlab.steps import evaluate_model, read_eval_sets

setup_logging(snakemake.log[0])
eval_sets, set_paths = read_eval_sets(snakemake.input.eval_sets)
evaluate_model(
    snakemake.params.checkpoint,
    eval_sets,
    set_paths,
    snakemake.output.metrics,
    snakemake.output.samples,
    snakemake.threads,
    **snakemake.params.settings,
)

# Provenance beside the results (git, host, versions, hashes, wall time); also indexes them.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(
    snakemake,
    "evaluate",
    [snakemake.params.checkpoint, *set_paths],
    device=dict(snakemake.params.settings).get("device"),
)
