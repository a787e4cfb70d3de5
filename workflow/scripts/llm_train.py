from ftlab.llm.steps import train_run
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
train_run(
    run=dict(snakemake.params.run),
    recipe=dict(snakemake.params.recipe),
    base=snakemake.params.base,
    data_path=snakemake.input.data,
    out_dir=snakemake.output.model,
    state_dir=snakemake.params.state_dir,
    study=snakemake.params.study,
)

# Provenance beside the model (git, host, versions, hashes, wall time); also indexes the run.
from ftlab.paths import Layout  # noqa: E402
from ftlab.provenance import write_provenance  # noqa: E402

write_provenance(
    Layout(snakemake.params.study).path("train_provenance", model=snakemake.wildcards.model),
    stage="train",
    study=snakemake.params.study,
    model=snakemake.wildcards.model,
    config=snakemake.config,
    data=[snakemake.input.data],
)
