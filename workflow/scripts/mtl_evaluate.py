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
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "evaluate", [*dict(snakemake.params.test_sets).values()])
