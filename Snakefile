# ftlab: one workflow for fine-tuning studies.
#   snakemake --cores all                      the embedded default (config/config.yaml)
#   snakemake --cores all --configfile F.yaml  another study (F describes the whole study)
#   snakemake -n                               what is pending
# Paths come from the file contract in src/ftlab/paths.py (see config/README.md).


include: "rules/common.smk"


# The study's kind (config `kind:`) names its rules files in the registry, src/ftlab/kinds.py.
for rules_file in KIND.rule_files:

    include: f"rules/{rules_file}"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        STUDY.targets(P),


# Last, once every rule exists: Snakemake reads each rule function's signature once instead of
# at every call (src/ftlab/signatures.py; planning speed).
remember_signatures(workflow.rules)
