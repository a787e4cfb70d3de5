# Tables: tidy metrics, normalized improvement / expected vs actual, probes, a summary.


rule tables:
    input:
        evals=[path for m in STUDY.models for path in eval_outputs(m)],  # one per eval job
        probes=[probe_output(m) for m in STUDY.models],
    output:
        metrics=report(P.metrics_table, caption="../report/metrics.rst", category="Tables"),
        normalized=report(P.normalized_table, caption="../report/normalized.rst", category="Tables"),
        probes=report(P.probes_table, caption="../report/probes_table.rst", category="Tables"),
        summary=report(P.summary_table, caption="../report/summary.rst", category="Tables"),
    log:
        log_path("tables"),
    benchmark:
        benchmark_path("tables")
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=world_settings.tables(config),
    script:
        "../workflow/scripts/tables.py"
