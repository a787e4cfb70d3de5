# Data: the city table, per-task splits, the multitask pretraining mix, fine-tuning mixtures.


rule cities:
    output:
        cities=P.cities,
    log:
        log_path("cities"),
    benchmark:
        benchmark_path("cities")
    group:
        "data"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # recorded by Snakemake: a changed setting re-runs the rule (rerun trigger "params");
        # the script passes exactly these to the stage function
        settings=world_settings.cities(config),
    script:
        "../workflow/scripts/make_cities.py"


rule task_split:
    input:
        cities=P.cities,
    output:
        train=P.path("task_split", task="{task}", variant="{variant}", split="train"),
        test=P.path("task_split", task="{task}", variant="{variant}", split="test"),
    log:
        log_path("task_split", "{task}__{variant}"),
    benchmark:
        benchmark_path("task_split", "{task}__{variant}")
    wildcard_constraints:
        task="|".join(TASKS),
    group:
        "data"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        settings=lambda wc: world_settings.task_split(config, wc.variant),
    script:
        "../workflow/scripts/make_task_split.py"


rule multitask:
    input:
        train=[split_path(t, "no_atlantis", "train") for t in STUDY.tasks],
        test=[split_path(t, "no_atlantis", "test") for t in STUDY.tasks],
    output:
        train=split_path(MULTITASK, "no_atlantis", "train"),
        test=split_path(MULTITASK, "no_atlantis", "test"),
    log:
        log_path("multitask"),
    benchmark:
        benchmark_path("multitask")
    group:
        "data"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=world_settings.multitask(config, STUDY),
    script:
        "../workflow/scripts/make_multitask.py"


rule mixture:
    input:
        unpack(mixture_inputs),
    output:
        rows=P.mixture,
    log:
        log_path("mixture", "{mixture}"),
    benchmark:
        benchmark_path("mixture", "{mixture}")
    group:
        "data"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda wc: world_settings.mixture(config, wc.mixture, STUDY),
    script:
        "../workflow/scripts/make_mixture.py"


# One file naming every eval set: each evaluation job depends on it, not on all 15 sets.
rule eval_sets:
    input:
        sets=eval_set_inputs,
    output:
        index=P.eval_sets,
    log:
        log_path("eval_sets"),
    benchmark:
        benchmark_path("eval_sets")
    group:
        "data"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        eval_sets=EVAL_SETS,
    script:
        "../workflow/scripts/index_eval_sets.py"
