# TIR data: problem rows per dataset, and the tiny base model (base_model: tiny).


rule tir_dataset:
    output:
        rows=P.tir_rows,
    log:
        log_path("tir_dataset", "{dataset}"),
    benchmark:
        benchmark_path("tir_dataset", "{dataset}")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
    params:
        spec=lambda wc: TIR["datasets"][wc.dataset],
        data_root=TIR["data_root"],
    script:
        "../workflow/scripts/tir_dataset.py"


rule tir_tiny_base:
    output:
        checkpoint=directory(TIR_TINY_BASE),
    log:
        log_path("tir_tiny_base"),
    benchmark:
        benchmark_path("tir_tiny_base")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
    params:
        settings=TIR["tiny_base"],
        prompt_template=lambda wc: TIR["prompt_template"],
        seed=min(config["seeds"]),
    script:
        "../workflow/scripts/tir_tiny_base.py"
