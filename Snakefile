# ftlab: one workflow for fine-tuning studies.
#   snakemake --cores all                      the embedded default (config/config.yaml)
#   snakemake --cores all --configfile F.yaml  another study (F describes the whole study)
#   snakemake -n                               what is pending
# Paths come from the file contract in src/ftlab/paths.py (see config/README.md).


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/represent.smk"
include: "rules/tables.smk"
include: "rules/plots.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        all_targets(),
