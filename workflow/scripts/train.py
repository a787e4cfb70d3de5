from ftlab.runlog import setup_logging
from ftlab.steps import train_model

setup_logging(snakemake.log[0])
train_model(
    snakemake.input.rows,
    snakemake.params.init_checkpoint,
    snakemake.output.model,
    snakemake.params.state_dir,
    snakemake.threads,
    **snakemake.params.settings,
)

# Provenance beside the model (git, host, versions, hashes, wall time); also indexes the run.
from ftlab.paths import Layout  # noqa: E402
from ftlab.provenance import write_provenance  # noqa: E402

write_provenance(
    Layout(snakemake.config["study"]).path("train_provenance", model=snakemake.wildcards.model),
    stage="train",
    study=snakemake.config["study"],
    model=snakemake.wildcards.model,
    config=snakemake.config,
    data=[snakemake.input.rows],
    device=dict(snakemake.params.settings).get("device"),
)
