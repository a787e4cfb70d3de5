from ftlab.steps import make_mixture, setup_logging

setup_logging(snakemake.log[0])
make_mixture(
    snakemake.config,
    snakemake.wildcards.mixture,
    list(snakemake.input.no_atlantis),
    list(snakemake.input.atlantis),
    snakemake.output.rows,
)
