# Evaluation: one job per selected checkpoint scores all of its eval sets (one model load) and
# writes one metrics and one samples file for all of them (paths.py eval_metrics/eval_samples).
# The sets come through their index (rule eval_sets): one input file instead of 15.


rule evaluate:
    input:
        model=lambda wc: model_dir(wc.model),
        eval_sets=P.eval_sets,
    output:
        metrics=P.eval_metrics,
        samples=P.eval_samples,
    log:
        log_path("evaluate", "{model}", "checkpoint-{step}"),
    benchmark:
        benchmark_path("evaluate", "{model}", "checkpoint-{step}")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
        gpu=gpus("evaluate"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        checkpoint=saved_checkpoint,
        settings=lambda wc: world_settings.evaluation(config, wc.model, wc.step),
    script:
        "../workflow/scripts/evaluate.py"
