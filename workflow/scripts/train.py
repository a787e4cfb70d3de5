from ftlab.steps import setup_logging, train_model

setup_logging(snakemake.log[0])
train_model(
    snakemake.config,
    snakemake.wildcards.model,
    snakemake.input.rows,
    snakemake.params.init_checkpoint,
    snakemake.output.model,
    snakemake.params.state_dir,
    snakemake.threads,
)
