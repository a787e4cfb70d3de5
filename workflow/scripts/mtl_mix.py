from ftlab.mtl.steps import make_llm_mix, make_world_mix
from ftlab.runlog import setup_logging

setup_logging(snakemake.log[0])
make = make_world_mix if snakemake.params.world else make_llm_mix
make(
    list(snakemake.input.sources),
    snakemake.output.train,
    snakemake.output.validation,
    **snakemake.params.settings,
)
