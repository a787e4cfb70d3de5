from ftlab.steps import build_tables, setup_logging

setup_logging(snakemake.log[0])
build_tables(
    snakemake.config,
    list(snakemake.input.evals),
    list(snakemake.input.probes),
    {name: snakemake.output[name] for name in ("metrics", "normalized", "probes", "summary")},
)
