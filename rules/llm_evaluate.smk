# LLM evaluation: one job per checkpoint (and one for the base model) runs every lm-eval
# benchmark and the in-domain sets, with a per-sample cache so a killed job resumes.
# Several GPUs (resources.evaluate.gpus): llm.lm_eval.parallel data (default) starts one process
# per GPU through ftlab.launch (lm-eval's data-parallel mode, a cache file per rank merged by
# rank 0); model runs one process with the model split over the GPUs (HF device_map); the vllm
# backend always runs one process with tensor_parallel_size = the job's GPUs.


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
        **LLM_EVAL_JOB[1],
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
    params:
        model_path=llm_model_path,
        test_rows=llm_test_rows,
        cache=lambda wc: P.path("eval_cache", model=wc.model, step=wc.step),
        release_weights=llm_release_weights,
        # lm_eval.parallel left out: where the model sits does not change a result (the
        # launch plan says it; a launched plan is recorded)
        settings={
            "benchmarks": config["llm"]["benchmarks"],
            "lm_eval": {k: v for k, v in config["llm"]["lm_eval"].items() if k != "parallel"},
            "in_domain": config["llm"]["in_domain"],
        },
        formats={d: spec["format"] for d, spec in config["llm"]["datasets"].items()},
        study=config["study"],
        launch=LLM_EVAL_JOB[0],
    script:
        "../workflow/scripts/llm_evaluate.py"
