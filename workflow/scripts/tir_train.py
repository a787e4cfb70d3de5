from ftlab.runlog import setup_logging
from ftlab.tir.steps import train

setup_logging(snakemake.log[0])
train(
    dict(snakemake.params.run),
    dict(snakemake.params.grpo),
    base_model=snakemake.params.base_model,
    rows_path=snakemake.input.rows,
    prompt_template=snakemake.params.prompt_template,
    sandbox=dict(snakemake.params.sandbox),
    scorer=dict(snakemake.params.scorer),
    seed=snakemake.params.seed,
    out_dir=snakemake.output.model,
    state_dir=snakemake.params.state_dir,
)
