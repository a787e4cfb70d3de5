# LLM evaluation: one job per checkpoint (and one for the base model) runs every lm-eval
# benchmark and the in-domain sets, with a per-sample cache so a killed job resumes.


rule evaluate_llm:
    input:
        model=llm_eval_model_input,
        test=lambda wc: list(llm_test_rows().values()),
        preflight=llm_preflight_input,
    output:
        lm_eval=P.lm_eval_metrics,
        lm_eval_samples=P.lm_eval_samples,
        in_domain=P.in_domain_metrics,
        in_domain_samples=P.in_domain_samples,
    log:
        log_path("evaluate", "{model}", "checkpoint-{step}"),
    benchmark:
        benchmark_path("evaluate", "{model}", "checkpoint-{step}")
    conda:
        "../envs/llm.yaml"
    threads: config["threads"]
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
        gpu=gpus("evaluate"),
    params:
        model_path=llm_model_path,
        test_rows=llm_test_rows,
        cache=lambda wc: P.path("eval_cache", model=wc.model, step=wc.step),
        release_weights=llm_release_weights,
        settings={k: config["llm"][k] for k in ("benchmarks", "lm_eval", "in_domain")},
        formats={d: spec["format"] for d, spec in config["llm"]["datasets"].items()},
        study=config["study"],
    script:
        "../workflow/scripts/llm_evaluate.py"
