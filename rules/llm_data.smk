# LLM data: normalized datasets, ground-truth SFT records, verified teacher trajectories.


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
    script:
        "../workflow/scripts/llm_sft_records.py"


rule teacher_trajectories:
    input:
        rows=P.path("llm_rows", dataset="{dataset}", split="train"),
        teacher=llm_teacher_inputs,
    output:
        records=P.path("sft_records", dataset="{dataset}", source="teacher"),
        report=P.path("teacher_report", dataset="{dataset}"),
    log:
        log_path("teacher_trajectories", "{dataset}"),
    benchmark:
        benchmark_path("teacher_trajectories", "{dataset}")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
        gpu=gpus("evaluate"),
    params:
        teacher=lambda wc: (
            TINY_BASE_CHECKPOINT
            if config["llm"]["teacher"]["model"] == "tiny"
            else config["llm"]["teacher"]["model"]
        ),
        settings=config["llm"]["teacher"],
        fmt=lambda wc: config["llm"]["datasets"][wc.dataset]["format"],
    script:
        "../workflow/scripts/llm_teacher.py"
