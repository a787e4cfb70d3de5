from ftlab.runlog import setup_logging
from ftlab.steps import evaluate_model

setup_logging(snakemake.log[0])
evaluate_model(
    snakemake.params.checkpoint,
    list(snakemake.params.eval_sets),
    list(snakemake.input.sets),
    snakemake.output.metrics,
    snakemake.output.samples,
    snakemake.threads,
    **snakemake.params.settings,
)

# Provenance beside the results (git, host, versions, hashes, wall time); also indexes them.
from ftlab.paths import Layout  # noqa: E402
from ftlab.provenance import write_provenance  # noqa: E402

write_provenance(
    Layout(snakemake.config["study"]).path(
        "eval_provenance", model=snakemake.wildcards.model, step=snakemake.wildcards.step
    ),
    stage="evaluate",
    study=snakemake.config["study"],
    model=snakemake.wildcards.model,
    step=int(snakemake.wildcards.step),
    config=snakemake.config,
    data=[snakemake.params.checkpoint, *snakemake.input.sets],
    device=dict(snakemake.params.settings).get("device"),
)
