from pathlib import Path

from ftlab.mtl.steps import build_report
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
build_report(
    list(snakemake.input.evals),
    list(snakemake.input.samples),
    [str(Path(m) / "mtl_manifest.json") for m in snakemake.input.models],
    {k: snakemake.output[k] for k in ("scores", "comparison", "evolution", "plot", "markdown")},
    **snakemake.params.settings,
)
