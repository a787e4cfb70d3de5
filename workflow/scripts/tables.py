from ftlab.runlog import setup_logging
from ftlab.steps import build_tables
from ftlab.study import Study

setup_logging(snakemake.log[0])
build_tables(
    Study(snakemake.params.settings["matrix"]),
    snakemake.params.settings["summary"],
    list(snakemake.input.evals),
    list(snakemake.input.probes),
    {name: snakemake.output[name] for name in ("metrics", "normalized", "probes", "summary")},
)
