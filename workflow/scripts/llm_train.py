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
