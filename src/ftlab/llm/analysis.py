"""Forgetting tables and plots of an LLM study (seed 003).

forgetting(run, step, benchmark) = score(run at step) - score(base model), on the benchmark's
configured metric; negative = the fine-tune lost ability. The "Key Results" summary takes each
run's last evaluated checkpoint: the mean over benchmarks and the worst benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ftlab.io import atomic_path, read_json
from ftlab.llm.study import BASE

SCORE_COLUMNS = ["model", "method", "dataset", "seed", "step", "benchmark", "metric", "value", "n"]


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
                    "n": b.get("n"),
                }
            )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def forgetting_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Adds base_value and forgetting = value - base_value; the base model's row is each run's
    step-0 point of its curve."""
    base = scores[scores.model == BASE].set_index("benchmark")["value"]
    if base.empty:
        raise ValueError("no evaluation of the base model: forgetting is undefined")
    runs = scores[scores.model != BASE].copy()
    base_points = []
    for (model, method, dataset, seed), _ in runs.groupby(
        ["model", "method", "dataset", "seed"], sort=False
    ):
        start = scores[scores.model == BASE].copy()
        start[["model", "method", "dataset", "seed"]] = [model, method, dataset, seed]
        base_points.append(start)
    out = pd.concat([*base_points, runs], ignore_index=True) if base_points else runs
    out["base_value"] = out["benchmark"].map(base)
    out["forgetting"] = out["value"] - out["base_value"]
    return out.sort_values(["dataset", "method", "seed", "step", "benchmark"], ignore_index=True)


def summary_frame(forgetting: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's Key Results: per run at its last step, mean forgetting over benchmarks and
    the worst benchmark (most negative forgetting)."""
    rows = []
    for (model, method, dataset, seed), df in forgetting.groupby(
        ["model", "method", "dataset", "seed"], sort=False
    ):
        last = df[df.step == df.step.max()]
        worst = last.loc[last.forgetting.idxmin()]
        rows.append(
            {
                "model": model,
                "method": method,
                "dataset": dataset,
                "seed": seed,
                "step": int(last.step.iloc[0]),
                "n_benchmarks": len(last),
                "avg_forgetting": float(last.forgetting.mean()),
                "worst_benchmark": worst.benchmark,
                "worst_forgetting": float(worst.forgetting),
            }
        )
    return pd.DataFrame(rows)


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


def plot_forgetting(forgetting: pd.DataFrame, dataset: str, out: str | Path) -> None:
    """Forgetting per benchmark over training steps, one line per method (mean over seeds)."""
    import seaborn as sns

    plt = _figure()
    df = forgetting[forgetting.dataset == dataset]
    benchmarks = sorted(df.benchmark.unique())
    n = max(1, len(benchmarks))
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, bench in zip(axes.flat, benchmarks, strict=False):
        sns.lineplot(
            data=df[df.benchmark == bench],
            x="step",
            y="forgetting",
            hue="method",
            marker="o",
            ax=ax,
            errorbar=None,
            legend=ax is axes.flat[0],
        )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(bench, fontsize=9)
    for ax in list(axes.flat)[len(benchmarks) :]:
        ax.axis("off")
    if not benchmarks:
        axes.flat[0].text(0.5, 0.5, f"no runs trained on {dataset}", ha="center")
    fig.suptitle(f"forgetting (score - base) while fine-tuning on {dataset}")
    _save(fig, out)
    plt.close(fig)


def plot_summary(summary: pd.DataFrame, out: str | Path) -> None:
    """Average forgetting per method and dataset at the last checkpoint (worst benchmark noted)."""
    import seaborn as sns

    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if summary.empty:
        ax.text(0.5, 0.5, "no runs", ha="center")
    else:
        sns.barplot(
            data=summary, x="dataset", y="avg_forgetting", hue="method", ax=ax, errorbar=None
        )
        ax.axhline(0, color="grey", lw=0.8)
        worst = summary.groupby(["dataset", "method"]).worst_forgetting.min().min()
        ax.set_title(f"mean forgetting over benchmarks, last checkpoint (worst cell {worst:+.3f})")
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
