# ftlab: one workflow for fine-tuning studies.
#   snakemake --cores all                      the embedded default (config/config.yaml)
#   snakemake --cores all --configfile F.yaml  another study (F describes the whole study)
#   snakemake -n                               what is pending
# Paths come from the file contract in src/ftlab/paths.py (see config/README.md).


include: "rules/common.smk"


# The same stages for both study kinds: data -> train -> evaluate -> (represent) -> tables/plots.
if IS_LLM:

    include: "rules/llm_data.smk"
    include: "rules/llm_train.smk"
    include: "rules/llm_evaluate.smk"
    include: "rules/llm_report.smk"

else:

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
