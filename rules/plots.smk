# Plots: each reads only the evaluations it shows, so one plot builds only what it needs.


rule plot_ftwb_heatmap:
    input:
        evals=lambda wc: plot_eval_inputs(wc.kind)(wc),
    output:
        plot=report(
            P.path("plot", plot="seed{seed}_{kind}_heatmap"),
            caption="../report/heatmap.rst",
            category="Heatmaps",
            subcategory="seed {seed}",
        ),
    log:
        log_path("plots", "seed{seed}_{kind}_heatmap"),
    benchmark:
        benchmark_path("plots", "seed{seed}_{kind}_heatmap")
    wildcard_constraints:
        kind="ftwb1|ftwb2",
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        matrix=world_settings.matrix(config),
    script:
        "../workflow/scripts/plot_heatmap.py"


rule plot_actual_minus_expected:
    input:
        evals=plot_eval_inputs("ftwb1", "ftwb2"),
    output:
        plot=report(
            P.path("plot", plot="seed{seed}_ftwb2_actual_minus_expected"),
            caption="../report/actual_minus_expected.rst",
            category="Heatmaps",
            subcategory="seed {seed}",
        ),
    log:
        log_path("plots", "seed{seed}_ftwb2_actual_minus_expected"),
    benchmark:
        benchmark_path("plots", "seed{seed}_ftwb2_actual_minus_expected")
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        matrix=world_settings.matrix(config),
    script:
        "../workflow/scripts/plot_actual_minus_expected.py"


rule plot_probes:
    input:
        probes=[probe_output(m) for m in STUDY.models],
    output:
        plot=report(
            P.path("plot", plot="probes"), caption="../report/probes.rst", category="Probes"
        ),
    log:
        log_path("plots", "probes"),
    benchmark:
        benchmark_path("plots", "probes")
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/plot_probes.py"
