from ftlab.steps import make_cities, setup_logging

setup_logging(snakemake.log[0])
make_cities(snakemake.config, snakemake.output.cities)
