from ftlab.runlog import setup_logging
from ftlab.steps import make_mixture

setup_logging(snakemake.log[0])
make_mixture(
    list(snakemake.input.no_atlantis),
    list(snakemake.input.atlantis),
    snakemake.output.rows,
    **snakemake.params.settings,
)
