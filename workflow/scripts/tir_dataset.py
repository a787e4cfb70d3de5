from ftlab.runlog import setup_logging
from ftlab.tir.steps import prepare_rows

setup_logging(snakemake.log[0])
prepare_rows(
    snakemake.wildcards.dataset,
    dict(snakemake.params.spec),
    snakemake.output.rows,
    data_root=snakemake.params.data_root,
)
