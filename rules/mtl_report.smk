# Multi-task report: scores of every kept checkpoint, evolution per domain (stopping point,
# overfitting), method minus baseline with paired bootstrap intervals; markdown + HTML report.


rule mtl_report:
    input:
        models=[model_dir(m) for m in STUDY.runs],
        evals=mtl_kept("mtl_eval"),
        samples=mtl_kept("mtl_eval_samples"),
    output:
        scores=report(
            MTL_REPORT["scores"], caption="../report/mtl_scores.rst", category="Multi-task"
        ),
        comparison=report(
            MTL_REPORT["comparison"],
            caption="../report/mtl_comparison.rst",
            category="Multi-task",
        ),
        evolution=report(
            MTL_REPORT["evolution"], caption="../report/mtl_evolution.rst", category="Multi-task"
        ),
        plot=report(
            MTL_REPORT["plot"], caption="../report/mtl_evolution.rst", category="Multi-task"
        ),
        markdown=report(
            MTL_REPORT["markdown"], caption="../report/mtl_report.rst", category="Multi-task"
        ),
    log:
        log_path("mtl_report"),
    benchmark:
        benchmark_path("mtl_report")
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=mtl_settings.report(config, STUDY),
    script:
        "../workflow/scripts/mtl_report.py"
