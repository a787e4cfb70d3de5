# LLM tables and plots: each checkpoint vs the base (paired bootstrap), forgetting per
# benchmark over steps with intervals, Key Results, in-domain curves.


rule compare_llm:
    input:
        base=P.path("lm_eval_samples", model=BASE, step=0),
        samples=P.lm_eval_samples,
    output:
        comparison=P.lm_eval_vs_base,
    log:
        log_path("compare_llm", "{model}", "checkpoint-{step}"),
    benchmark:
        benchmark_path("compare_llm", "{model}", "checkpoint-{step}")
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        benchmarks=config["llm"]["benchmarks"],
        stats=config["llm"]["stats"],
    script:
        "../workflow/scripts/llm_compare.py"


rule tables_llm:
    input:
        lm_eval=llm_eval_outputs("lm_eval_metrics"),
        in_domain=llm_eval_outputs("in_domain_metrics"),
        comparisons=llm_comparisons(),
    output:
        forgetting=report(
            LLM_TABLES["forgetting"], caption="../report/forgetting.rst", category="Tables"
        ),
        summary=report(
            LLM_TABLES["summary"], caption="../report/forgetting_summary.rst", category="Tables"
        ),
        in_domain=report(
            LLM_TABLES["in_domain"], caption="../report/in_domain.rst", category="Tables"
        ),
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
        confidence=config["llm"]["stats"]["confidence"],
        runs={
            name: {"method": run.method, "dataset": run.dataset, "seed": run.seed}
            for name, run in STUDY.runs.items()
        },
    script:
        "../workflow/scripts/llm_tables.py"


rule plot_llm:
    input:
        **LLM_TABLES,
    output:
        plot=report(
            P.path("plot", plot="{which}"),
            caption="../report/llm_plot.rst",
            category="Forgetting",
        ),
    log:
        log_path("plots", "{which}"),
    benchmark:
        benchmark_path("plots", "{which}")
    wildcard_constraints:
        # only the study's datasets: another name would match and build the whole study
        which="forgetting_summary|(forgetting|in_domain)_("
        + "|".join(re.escape(d) for d in config["llm"]["datasets"])
        + ")",
    conda:
        "../envs/plots.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        confidence=config["llm"]["stats"]["confidence"],
    script:
        "../workflow/scripts/llm_plot.py"
