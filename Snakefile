# ftlab: one workflow for fine-tuning studies.
#   snakemake --cores all                      the embedded default (config/config.yaml)
#   snakemake --cores all --configfile F.yaml  another study (F describes the whole study)
#   snakemake -n                               what is pending
# Paths come from the file contract in src/ftlab/paths.py (see config/README.md).


include: "rules/common.smk"


# The study's kind (config `kind:`) names its rules files in the registry, src/ftlab/kinds.py.
for rules_file in KIND.rule_files:

    include: f"rules/{rules_file}"


# The report (tables, plots) runs in the head process under a cluster executor, not as
# cluster jobs: seconds each, against a scheduling pass and a Snakemake start per job
# (ftlab.slurm.report_in_head; FTLAB_REPORT_ON_CLUSTER=1 sends them to the cluster).
if report_in_head():
    workflow.localrules(*KIND.report_rules)


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        STUDY.targets(P),


# Last, once every rule exists: Snakemake reads each rule function's signature once instead of
# at every call (src/ftlab/signatures.py; planning speed).
remember_signatures(workflow.rules)
