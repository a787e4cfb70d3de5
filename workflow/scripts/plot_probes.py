from ftlab.steps import plot_probes, setup_logging

setup_logging(snakemake.log[0])
plot_probes(snakemake.config, list(snakemake.input.probes), snakemake.output.plot)
