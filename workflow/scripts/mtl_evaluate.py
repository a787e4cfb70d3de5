from ftlab.mtl.settings import evaluation_job
from ftlab.mtl.steps import evaluate_checkpoint
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
settings = evaluation_job(snakemake.params.settings, snakemake.config)
evaluate_checkpoint(
    snakemake.params.checkpoint,
    dict(snakemake.params.test_sets),
    snakemake.output.metrics,
    snakemake.output.samples,
    snakemake.threads,
    snakemake.params.cache,
    **settings,
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
    data=[*dict(snakemake.params.test_sets).values()],
)
