# Multi-task evaluation: one job per KEPT checkpoint (read from the run's manifest) scores the
# whole suite; per-sample rewards feed the paired comparison.


rule mtl_evaluate:
    input:
        model=lambda wc: model_dir(wc.model),
        test_sets=lambda wc: list(mtl_test_sets().values()),
    output:
        metrics=P.mtl_eval,
        samples=P.mtl_eval_samples,
    log:
        log_path("evaluate", "{model}", "checkpoint-{step}"),
    benchmark:
        benchmark_path("evaluate", "{model}", "checkpoint-{step}")
    conda:
        "../envs/torch.yaml" if MTL_WORLD else "../envs/llm.yaml"
    threads: config["threads"]
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
        gpu=gpus("evaluate"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        checkpoint=mtl_eval_checkpoint,
        test_sets=mtl_test_sets(),
        cache=lambda wc: P.path("eval_cache", model=wc.model, step=wc.step),
        settings=lambda wc: mtl_settings.evaluation(config, wc.model, wc.step),
    script:
        "../workflow/scripts/mtl_evaluate.py"
