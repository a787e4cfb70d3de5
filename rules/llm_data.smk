# LLM data: the preflight, normalized datasets (with their data reports), ground-truth SFT
# records, verified teacher trajectories (SF-SFT: llm.teacher, CF-SFT: llm.cf_teacher).


rule llm_preflight:
    output:
        report=P.llm_preflight,
    log:
        log_path("llm_preflight"),
    benchmark:
        benchmark_path("llm_preflight")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        base_model=config["llm"]["base_model"],
        datasets=config["llm"]["datasets"],
        data_root=config["llm"]["data_root"],
        benchmarks=config["llm"]["benchmarks"],
        include_path=config["llm"]["lm_eval"]["include_path"],
        teachers={TEACHERS[s]: config["llm"][TEACHERS[s]]["model"] for s in STUDY.teacher_sources()},
    script:
        "../workflow/scripts/llm_preflight.py"


rule llm_tiny_base:
    output:
        checkpoint=directory(TINY_BASE_CHECKPOINT),
    log:
        log_path("llm_tiny_base"),
    benchmark:
        benchmark_path("llm_tiny_base")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seeds"][0],
    script:
        "../workflow/scripts/llm_tiny_base.py"


rule llm_dataset:
    output:
        train=P.path("llm_rows", dataset="{dataset}", split="train"),
        test=P.path("llm_rows", dataset="{dataset}", split="test"),
        report=P.path("llm_data_report", dataset="{dataset}"),
    log:
        log_path("llm_dataset", "{dataset}"),
    benchmark:
        benchmark_path("llm_dataset", "{dataset}")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=lambda wc: config["llm"]["datasets"][wc.dataset],
        data_root=config["llm"]["data_root"],
        seed=config["seeds"][0],
    script:
        "../workflow/scripts/llm_dataset.py"


rule sft_records_gt:
    input:
        rows=P.path("llm_rows", dataset="{dataset}", split="train"),
    output:
        records=P.path("sft_records", dataset="{dataset}", source="gt"),
    log:
        log_path("sft_records_gt", "{dataset}"),
    benchmark:
        benchmark_path("sft_records_gt", "{dataset}")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        fmt=lambda wc: config["llm"]["datasets"][wc.dataset]["format"],
        prompt_format=config["llm"]["prompt_format"],
    script:
        "../workflow/scripts/llm_sft_records.py"


rule teacher_trajectories:
    input:
        rows=P.path("llm_rows", dataset="{dataset}", split="train"),
        teacher=llm_teacher_inputs,
        preflight=llm_preflight_input,
    output:
        records=P.path("sft_records", dataset="{dataset}", source="{source}"),
        report=P.path("teacher_report", dataset="{dataset}", source="{source}"),
    log:
        log_path("teacher_trajectories", "{dataset}", "{source}"),
    benchmark:
        benchmark_path("teacher_trajectories", "{dataset}", "{source}")
    wildcard_constraints:
        source="|".join(TEACHERS),
    conda:
        "../envs/llm.yaml"
    resources:
        **llm_teacher_resources(),
        mem_mb=scaled("teacher", "mem_mb"),
        runtime=scaled("teacher", "runtime"),
    params:
        teacher=llm_teacher_model,
        # parallel left out (placement; the launch plan says it): same records either way
        settings=lambda wc: {
            k: v for k, v in config["llm"][TEACHERS[wc.source]].items() if k != "parallel"
        },
        gpus=gpus("teacher"),
        launch=lambda wc: llm_teacher_job(wc.source)[0],
        fmt=lambda wc: config["llm"]["datasets"][wc.dataset]["format"],
        shards=lambda wc: P.path("teacher_shards", dataset=wc.dataset, source=wc.source),
        declared=lambda wc: (config["llm"]["datasets"][wc.dataset]["rows"].get(wc.source)),
        declared_key=lambda wc: f"llm.datasets.{wc.dataset}.rows.{wc.source}",
        prompt_format=config["llm"]["prompt_format"],
    script:
        "../workflow/scripts/llm_teacher.py"
