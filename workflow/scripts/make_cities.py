from ftlab.runlog import setup_logging
from ftlab.steps import make_cities

setup_logging(snakemake.log[0])
make_cities(snakemake.output.cities, **snakemake.params.settings)
