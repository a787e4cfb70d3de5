# Multi-task data. world: cities, the geometry tasks' no_atlantis splits (train rows +
# validation tail for trained tasks, test rows for the suite), the training/validation mix.
# sft/grpo: each training dataset normalized, then the mix with a "task" field per row.


if MTL_WORLD:

    rule mtl_cities:
        output:
            cities=P.cities,
        log:
            log_path("cities"),
        benchmark:
            benchmark_path("cities")
        conda:
            "../envs/data.yaml"
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            settings=mtl_settings.cities(config),
        script:
            "../workflow/scripts/make_cities.py"

    rule mtl_task_split:
        input:
            cities=P.cities,
        output:
            train=mtl_world_split("{task}", "train"),
            test=mtl_world_split("{task}", "test"),
        log:
            log_path("task_split", "{task}__no_atlantis"),
        benchmark:
            benchmark_path("task_split", "{task}__no_atlantis")
        wildcard_constraints:
            task="|".join(MTL_SPLIT_TASKS),
        conda:
            "../envs/data.yaml"
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            settings=lambda wc: mtl_settings.task_split(config, wc.task),
        script:
            "../workflow/scripts/mtl_task_split.py"

else:

    rule mtl_dataset:
        output:
            rows=P.mtl_task_rows,
        log:
            log_path("mtl_dataset", "{task}"),
        benchmark:
            benchmark_path("mtl_dataset", "{task}")
        wildcard_constraints:
            task="|".join(MTL_TASKS),
        conda:
            "../envs/llm.yaml"
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            settings=lambda wc: mtl_settings.dataset(config, wc.task),
        script:
            "../workflow/scripts/mtl_dataset.py"

    rule mtl_tiny_base:
        output:
            checkpoint=directory(MTL_TINY_BASE),
        log:
            log_path("mtl_tiny_base"),
        benchmark:
            benchmark_path("mtl_tiny_base")
        conda:
            "../envs/llm.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            seed=config["seeds"][0],
        script:
            "../workflow/scripts/llm_tiny_base.py"


rule mtl_mix:
    input:
        sources=mtl_source_rows(),
    output:
        train=P.mtl_train_rows,
        validation=P.mtl_validation_rows,
    log:
        log_path("mtl_mix"),
    benchmark:
        benchmark_path("mtl_mix")
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        world=MTL_WORLD,
        settings=mtl_settings.mix(config),
    script:
        "../workflow/scripts/mtl_mix.py"
