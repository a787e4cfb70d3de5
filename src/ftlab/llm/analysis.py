"""Forgetting tables and plots of an LLM study (seed 003).

forgetting(run, step, benchmark) = score(run at step) - score(base model), on the benchmark's
configured metric; negative = the fine-tune lost ability. Each score keeps lm-eval's standard
error; each forgetting gets the paired-bootstrap interval, p-value, significance and the name
of the test that gave p of its checkpoint-vs-base comparison (ftlab.llm.stats, one vs_base.json
per checkpoint). The "Key Results" summary takes each run's last evaluated checkpoint: the mean
over the benchmarks the base model has a score for (with its interval; the others are named in
`dropped_benchmarks` and warned about) and the worst benchmark; rows with seed "all" aggregate
the seeds of a method x dataset (mean, Student's t interval over seeds). Every interval, table
and plot, is at llm.stats.confidence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ftlab.io import atomic_path, read_json
from ftlab.llm.study import BASE

SCORE_COLUMNS = ["model", "method", "dataset", "seed", "step", "benchmark", "metric", "value",
                 "stderr", "n"]  # fmt: skip
CI_COLUMNS = ["ci_low", "ci_high", "p_value", "significant", "test"]
log = logging.getLogger(__name__)


Runs = Mapping[str, Mapping]  # run name -> {"method", "dataset", "seed"}


def _run_facts(model: str, runs: Runs) -> dict:
    if model == BASE:
        return {"method": "base", "dataset": "", "seed": np.nan}
    try:
        run = runs[model]
    except KeyError:
        raise KeyError(f"{model!r} is not a run of this study; known: {', '.join(runs)}") from None
    return {k: run[k] for k in ("method", "dataset", "seed")}


def benchmark_frame(paths: Iterable[str | Path], runs: Runs) -> pd.DataFrame:
    """One row per (model, step, benchmark) from the lm_eval.json files."""
    rows = []
    for path in paths:
        result = read_json(path)
        facts = _run_facts(result["model"], runs)
        for b in result["benchmarks"]:
            rows.append(
                {
                    "model": result["model"],
                    **facts,
                    "step": int(result["step"]),
                    "benchmark": b["task"],
                    "metric": b["metric"],
                    "value": float(b["value"]),
                    "stderr": b.get("stderr"),
                    "n": b.get("n"),
                }
            )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def comparison_frame(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (model, step, benchmark) of the vs_base.json files, plus the benchmark
    "mean" (the mean over benchmarks) with its interval."""
    rows = []
    for path in paths:
        result = read_json(path)
        items = [*result["benchmarks"].items(), ("mean", result["mean"])]
        for bench, r in items:
            # vs_base.json files written before the test was recorded: the interval decided
            rows.append({"model": result["model"], "step": int(result["step"]),
                         "benchmark": bench,
                         **{k: r.get(k, "percentile bootstrap interval excludes 0" if k == "test"
                                     else None) for k in CI_COLUMNS}})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "step", "benchmark", *CI_COLUMNS])


def forgetting_frame(scores: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Adds base_value, base_stderr and forgetting = value - base_value; the base model's row is
    each run's step-0 point of its curve. With `comparisons` (comparison_frame), each
    checkpoint's paired-bootstrap interval, p-value and significance."""
    base_rows = scores[scores.model == BASE].set_index("benchmark")
    if base_rows.empty:
        raise ValueError("no evaluation of the base model: forgetting is undefined")
    runs = scores[scores.model != BASE].copy()
    base_points = []
    for (model, method, dataset, seed), _ in runs.groupby(
        ["model", "method", "dataset", "seed"], sort=False, dropna=False
    ):
        start = scores[scores.model == BASE].copy()
        start[["model", "method", "dataset", "seed"]] = [model, method, dataset, seed]
        base_points.append(start)
    out = pd.concat([*base_points, runs], ignore_index=True) if base_points else runs
    out["base_value"] = out["benchmark"].map(base_rows["value"])
    out["base_stderr"] = out["benchmark"].map(base_rows["stderr"])
    out["forgetting"] = out["value"] - out["base_value"]
    if comparisons is not None and not comparisons.empty:
        out = out.merge(comparisons, on=["model", "step", "benchmark"], how="left")
    else:
        for col in CI_COLUMNS:
            out[col] = np.nan
    return out.sort_values(["dataset", "method", "seed", "step", "benchmark"], ignore_index=True)


def summary_frame(
    forgetting: pd.DataFrame, comparisons: pd.DataFrame | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Seed 003's Key Results: per run at its last step, mean forgetting over benchmarks (with
    its paired-bootstrap interval) and the worst benchmark (most negative forgetting, with its
    own); then one row per method x dataset with seed "all": the mean over seeds of the mean
    forgetting, with Student's t interval over seeds (NaN from one seed)."""
    from ftlab.llm.stats import seed_interval

    comp = comparisons if comparisons is not None else pd.DataFrame(
        columns=["model", "step", "benchmark", *CI_COLUMNS]
    )  # fmt: skip
    rows = []
    for (model, method, dataset, seed), df in forgetting.groupby(
        ["model", "method", "dataset", "seed"], sort=False, dropna=False
    ):
        step = int(df.step.max())
        last = df[df.step == step]
        # A benchmark the base model has no score for has no forgetting: left out of the mean
        # and of n_benchmarks, and named.
        dropped = sorted(last.benchmark[last.forgetting.isna()])
        last = last[last.forgetting.notna()]
        if dropped:
            log.warning("%s step %d: no base-model score for %s; left out of the mean "
                        "forgetting", model, step, ", ".join(dropped))  # fmt: skip
        if last.empty:
            worst = pd.Series({"benchmark": "", "forgetting": np.nan})
        else:
            worst = last.loc[last.forgetting.idxmin()]
        mean_ci = comp[(comp.model == model) & (comp.step == step) & (comp.benchmark == "mean")]
        ci = mean_ci.iloc[0] if len(mean_ci) else pd.Series(dict.fromkeys(CI_COLUMNS, np.nan))
        rows.append(
            {
                "model": model,
                "method": method,
                "dataset": dataset,
                "seed": seed,
                "step": step,
                "n_benchmarks": len(last),
                "dropped_benchmarks": ",".join(dropped),
                "avg_forgetting": float(last.forgetting.mean()) if len(last) else np.nan,
                "ci_low": ci["ci_low"],
                "ci_high": ci["ci_high"],
                "p_value": ci["p_value"],
                "significant": ci["significant"],
                "test": ci.get("test", np.nan),
                "worst_benchmark": worst.benchmark,
                "worst_forgetting": float(worst.forgetting),
                "worst_ci_low": worst.get("ci_low", np.nan),
                "worst_ci_high": worst.get("ci_high", np.nan),
                "worst_significant": worst.get("significant", np.nan),
                "n_seeds": 1,
            }
        )
    per_run = pd.DataFrame(rows)
    if per_run.empty:
        return per_run
    agg = []
    for (method, dataset), df in per_run.groupby(["method", "dataset"], sort=False):
        s = seed_interval(df.avg_forgetting, confidence)
        dropped = sorted({b for d in df.dropped_benchmarks for b in d.split(",") if b})
        agg.append({"model": "", "method": method, "dataset": dataset, "seed": "all",
                    "step": int(df.step.max()), "n_benchmarks": int(df.n_benchmarks.max()),
                    "dropped_benchmarks": ",".join(dropped),
                    "avg_forgetting": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                    "p_value": np.nan,
                    "significant": bool(s["ci_low"] > 0 or s["ci_high"] < 0)
                    if s["n_seeds"] > 1 else np.nan,
                    "test": "Student's t interval over seeds excludes 0"
                    if s["n_seeds"] > 1 else np.nan,
                    "worst_benchmark": "", "worst_forgetting": np.nan, "worst_ci_low": np.nan,
                    "worst_ci_high": np.nan, "worst_significant": np.nan,
                    "n_seeds": s["n_seeds"]})  # fmt: skip
    per_run["seed"] = per_run["seed"].astype(object)
    return pd.concat([per_run, pd.DataFrame(agg)], ignore_index=True)


def in_domain_frame(paths: Iterable[str | Path], runs: Runs) -> pd.DataFrame:
    rows = []
    for path in paths:
        result = read_json(path)
        facts = _run_facts(result["model"], runs)
        for eval_dataset, res in result["datasets"].items():
            rows.append(
                {
                    "model": result["model"],
                    **facts,
                    "step": int(result["step"]),
                    "eval_dataset": eval_dataset,
                    "accuracy": res["accuracy"],
                    "partial_accuracy": res["partial_accuracy"],
                    "format_accuracy": res["format_accuracy"],
                    "n": res["n"],
                }
            )
    return pd.DataFrame(rows)


# -- plots ----------------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix[1:], dpi=110, bbox_inches="tight")


def _curve(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per step: mean forgetting and its interval at `confidence` - over seeds (Student's t)
    when there are several, else the run's own (the comparison's, at llm.stats.confidence);
    `significant`: the t interval excluding 0 (several seeds), else the run's test."""
    from ftlab.llm.stats import seed_interval

    rows = []
    for step, g in df.groupby("step"):
        if g.seed.nunique() > 1:
            s = seed_interval(g.forgetting, confidence)
            low, high = s["ci_low"], s["ci_high"]
            sig = bool(low > 0 or high < 0)
        else:
            low, high = g.ci_low.mean(), g.ci_high.mean()
            flags = g["significant"].dropna() if "significant" in g else pd.Series([], object)
            sig = bool(flags.astype(bool).any()) if len(flags) else bool(low > 0 or high < 0)
        rows.append({"step": step, "forgetting": g.forgetting.mean(), "low": low, "high": high,
                     "significant": sig})  # fmt: skip
    return pd.DataFrame(rows, columns=["step", "forgetting", "low", "high", "significant"])


def _errorbars(ax, curve: pd.DataFrame, label: str, color) -> None:
    """Line with interval bars; filled markers where the interval excludes 0."""
    yerr = np.vstack([curve.forgetting - curve.low, curve.high - curve.forgetting])
    ax.errorbar(curve.step, curve.forgetting, yerr=np.nan_to_num(yerr), color=color, lw=1.2,
                capsize=2, marker="o", ms=4, mfc="white", label=label)  # fmt: skip
    sig = curve[curve.significant]
    ax.plot(sig.step, sig.forgetting, "o", color=color, ms=4, ls="none")


def _level(confidence: float) -> str:
    return f"{100 * confidence:.4g}%"


def plot_forgetting(
    forgetting: pd.DataFrame, dataset: str, out: str | Path, confidence: float = 0.95
) -> None:
    """Forgetting per benchmark over training steps, one line per method (mean over seeds),
    with intervals at `confidence` (llm.stats.confidence; filled markers: significantly
    different from the base model)."""
    plt = _figure()
    df = forgetting[forgetting.dataset == dataset]
    benchmarks = sorted(df.benchmark.unique())
    methods = sorted(df.method.unique())
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    n = max(1, len(benchmarks))
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, bench in zip(axes.flat, benchmarks, strict=False):
        for method in methods:
            sub = df[(df.benchmark == bench) & (df.method == method)]
            if len(sub):
                _errorbars(ax, _curve(sub, confidence), method, colors[method])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(bench, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("forgetting")
    if benchmarks:
        axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(benchmarks) :]:
        ax.axis("off")
    if not benchmarks:
        axes.flat[0].text(0.5, 0.5, f"no runs trained on {dataset}", ha="center")
    fig.suptitle(
        f"forgetting (score - base) while fine-tuning on {dataset}; bars: "
        f"{_level(confidence)} interval, filled: significant"
    )
    _save(fig, out)
    plt.close(fig)


def plot_summary(summary: pd.DataFrame, out: str | Path, confidence: float = 0.95) -> None:
    """Mean forgetting over benchmarks per method and dataset at the last checkpoint, with its
    interval (over seeds when there are several, else the paired bootstrap's), both computed
    at `confidence` (llm.stats.confidence) by summary_frame; the title says the level."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if summary.empty:
        ax.text(0.5, 0.5, "no runs", ha="center")
    else:
        runs = summary[summary.seed.astype(str) != "all"]
        agg = summary[summary.seed.astype(str) == "all"]
        datasets = list(dict.fromkeys(runs.dataset))
        methods = list(dict.fromkeys(runs.method))
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for j, dataset in enumerate(datasets):
                a = agg[(agg.method == method) & (agg.dataset == dataset)]
                r = runs[(runs.method == method) & (runs.dataset == dataset)]
                if a.empty and r.empty:
                    continue
                row = a.iloc[0] if len(a) and a.iloc[0].n_seeds > 1 else r.iloc[0]
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(row.avg_forgetting)
                lo.append(row.avg_forgetting - row.ci_low)
                hi.append(row.ci_high - row.avg_forgetting)
            yerr = np.nan_to_num(np.array([lo, hi], float))
            ax.bar(xs, ys, width=width, label=method, yerr=yerr, capsize=3)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend(fontsize=8)
        worst = runs.worst_forgetting.min()
        ax.set_title(f"mean forgetting over benchmarks, last checkpoint, {_level(confidence)} "
                     f"interval (worst cell {worst:+.3f})", fontsize=9)  # fmt: skip
    _save(fig, out)
    plt.close(fig)


def plot_in_domain(in_domain: pd.DataFrame, dataset: str, out: str | Path) -> None:
    """In-domain learning curves: accuracy / partial / format accuracy on `dataset` over steps."""
    import seaborn as sns

    plt = _figure()
    df = in_domain[(in_domain.eval_dataset == dataset)]
    runs = df[(df.dataset == dataset) | (df.method == "base")]
    long = runs.melt(
        id_vars=["model", "method", "step"],
        value_vars=["accuracy", "partial_accuracy", "format_accuracy"],
        var_name="measure",
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if long.empty:
        ax.text(0.5, 0.5, f"no in-domain results on {dataset}", ha="center")
    else:
        sns.lineplot(
            data=long,
            x="step",
            y="value",
            hue="method",
            style="measure",
            marker="o",
            errorbar=None,
            ax=ax,
        )
        ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"in-domain learning curve on {dataset}")
    _save(fig, out)
    plt.close(fig)
