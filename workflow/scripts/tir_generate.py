from ftlab.runlog import setup_logging
from ftlab.tir.steps import generate

setup_logging(snakemake.log[0])
generate(
    snakemake.params.model_path,
    snakemake.input.rows,
    dict(snakemake.params.sampling),
    prompt_template=snakemake.params.prompt_template,
    backend=snakemake.params.backend,
    batch_size=snakemake.params.batch_size,
    seed=snakemake.params.seed,
    sandbox=dict(snakemake.params.sandbox),
    out_generations=snakemake.output.generations,
    out_info=snakemake.output.info,
    gpus=int(snakemake.resources.gpu),
)
