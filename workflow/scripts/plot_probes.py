from ftlab.runlog import setup_logging
from ftlab.steps import plot_probes

setup_logging(snakemake.log[0])
plot_probes(list(snakemake.input.probes), snakemake.output.plot)
