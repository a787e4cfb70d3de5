from ftlab.steps import represent_model, setup_logging

setup_logging(snakemake.log[0])
represent_model(
    snakemake.config,
    snakemake.wildcards.model,
    int(snakemake.wildcards.step),
    snakemake.params.checkpoint,
    snakemake.input.cities,
    snakemake.output.features,
    snakemake.output.probe,
    snakemake.threads,
)
