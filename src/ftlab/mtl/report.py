"""The comparison report of a multi-task study: evolution plot and markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ftlab.io import atomic_write_text


def plot_evolution(evolution: pd.DataFrame, out: str | Path) -> None:
    """One panel per domain: reward per kept checkpoint (thin: each seed; thick: seed mean over
    the epochs every seed reached),
    the selected checkpoint of each run as a star, each run's last epoch as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(evolution["domain"]))
    methods = sorted(evolution["method"].unique(), key=lambda m: (m != "baseline", m))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    ncol = min(3, len(domains))
    nrow = -(-len(domains) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        d = evolution[evolution["domain"] == domain]
        for method in methods:
            g = d[d["method"] == method]
            for _, run in g.groupby("model"):
                run = run.sort_values("epoch")
                ax.plot(run["epoch"], run["reward"], color=colors[method], lw=0.7, alpha=0.5)
                sel = run[run["selected"]]
                ax.plot(sel["epoch"], sel["reward"], "*", color=colors[method], ms=10)
                ax.axvline(run["last_epoch"].iloc[0], color=colors[method], ls=":", lw=0.8)
            per_epoch = g.groupby("epoch")["reward"]
            n_runs = g["model"].nunique()
            mean = per_epoch.mean()[per_epoch.count() == n_runs]  # epochs every seed reached
            ax.plot(mean.index, mean.values, color=colors[method], lw=2, label=method)
        ax.set_title(domain)
        ax.set_xlabel("epoch")
        ax.set_ylabel("reward")
    for ax in list(axes.flat)[len(domains) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Evolution per domain (star: selected checkpoint; dotted: last epoch trained)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


CHECKPOINT_TEXT = {
    "last": "last (latest kept, as seed 000)",
    "selected": "selected (best-validation; option mtl.report.checkpoint)",
}


def _fmt(x: float) -> str:
    return f"{x:+.4f}"


def markdown(
    *,
    study: str,
    manifests: dict[str, dict],
    comparison: pd.DataFrame,
    overfit: pd.DataFrame,
    confidence: float,
    overfit_runs: pd.DataFrame | None = None,
    checkpoint: str = "last",
    n_resamples: int,
    validation_metric: str,
    plot_name: str,
    task_metrics: pd.DataFrame | None = None,
) -> str:
    level = f"{confidence:.0%}"
    lines = [
        f"# Multi-task comparison: {study}",
        "",
        "Rewards are per-sample outcomes in [0, 1] (higher is better). Differences are method "
        f"minus baseline at each run's {CHECKPOINT_TEXT[checkpoint]} checkpoint, paired by "
        f"seed and sample; intervals are {level} paired bootstrap percentile intervals over "
        f"samples and seeds ({n_resamples} replicates). **improvement** / **regression**: "
        "the interval excludes 0.",
        "",
        f"Multiple comparisons: {len(comparison)} intervals (every task, domain and overall row "
        f"of every method), each at {level}; no multiple-comparison correction is applied, so "
        f"about {(1 - confidence) * len(comparison):.1f} of them would exclude 0 by chance if "
        "no method differed.",
        "",
        "## Runs",
        "",
        "| run | stop | last epoch | kept epochs | selected epoch | "
        f"validation {validation_metric} |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in sorted(manifests.items()):
        kept = ", ".join(str(c["epoch"]) for c in m["checkpoints"])
        lines.append(
            f"| {name} | {m['stop_reason']} | {m['last_epoch']} | {kept} | "
            f"{m['selected']['epoch']} | {m['selected']['validation']:.4f} |"
        )
    for method, g in comparison.groupby("method", sort=True):
        lines += ["", f"## {method} vs baseline", ""]
        sections = (
            (("domain_sum", "all"), "Overall"), (("domain",), "Per domain"),
            (("task",), "Per task"),
        )  # fmt: skip
        for lvls, title in sections:
            part = g[g["level"].isin(lvls)]
            header = (
                f"| name | domain | baseline | method | diff | improvement % | {level} CI | seeds "
                "| samples | flag |"
            )
            lines += [f"### {title}", "", header, "|---" * 10 + "|"]
            if title == "Overall":
                (total,) = part[part["level"] == "domain_sum"].itertuples()
                lines[-2:-2] = [  # after the title, before the table
                    f"Seed 000's overall MTL effectiveness (the domain differences summed, "
                    f"{_fmt(total.diff)}): **{total.verdict}**. sum_over_domains: the "
                    "domains' rewards and differences summed; mean_over_tasks: every task "
                    "once. improvement % = diff / baseline x 100, as seed 000's per domain.",
                    "",
                ]
            for _, r in part.iterrows():
                flag = f"**{r['flag']}**" if r["flag"] else ""
                lines.append(
                    f"| {r['name']} | {r['domain']} | {r['baseline_reward']:.4f} | "
                    f"{r['method_reward']:.4f} | {_fmt(r['diff'])} | "
                    f"{r['improvement_pct']:+.1f}% | "
                    f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['n_seeds']} | "
                    f"{r['n_samples']} | {flag} |"
                )
            lines.append("")
        named = g[g["level"].isin(["domain", "task"])]
        ups = named[named["flag"] == "improvement"]["name"].tolist()
        downs = named[named["flag"] == "regression"]["name"].tolist()
        lines += [
            f"Improvements: {', '.join(ups) or 'none'}.  ",
            f"Regressions: {', '.join(downs) or 'none'}.",
        ]
    if task_metrics is not None and len(task_metrics):
        lines += _task_metrics_table(task_metrics, checkpoint)
    lines += [
        "",
        "## Evolution and overfitting",
        "",
        f"![evolution](../plots/{plot_name}.png)",
        "",
        "Overfitting = a run's own curve peaks before its last checkpoint and every later "
        "checkpoint stays below the peak by more than the configured drop (judged per seed, "
        "then counted: seeds stopping at different epochs make a seed-mean curve misleading).",
        "",
        "| method | domain | seeds overfitting | which seeds |",
        "|---|---|---|---|",
    ]
    for _, r in overfit.iterrows():
        lines.append(
            f"| {r['method']} | {r['domain']} | {r['n_overfit']} of {r['n_seeds']} | "
            f"{r['overfit_seeds'] or '-'} |"
        )
    if overfit_runs is not None:
        lines += [
            "",
            "| method | seed | domain | peak epoch | peak | last epoch | last | after peak "
            "| overfit |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in overfit_runs.iterrows():
            lines.append(
                f"| {r['method']} | {r['seed']} | {r['domain']} | {r['peak_epoch']} | "
                f"{r['peak_reward']:.4f} | {r['last_epoch']} | {r['last_reward']:.4f} | "
                f"{r['checkpoints_after_peak']} | {'**yes**' if r['overfit'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def _task_metrics_table(frame: pd.DataFrame, checkpoint: str) -> list[str]:
    """Each task's own metric (lm-eval's, or the guru engine's pass@1_(avg k) = main_eval's
    headline) per run at its compared checkpoint: the figures seed 000's engine reports."""
    runs = sorted(frame["model"].unique())
    lines = [
        "", f"## Task metrics at the {CHECKPOINT_TEXT[checkpoint]} checkpoint", "",
        "Each task's own metric as its evaluation reports it (not the [0, 1] reward above).",
        "", f"| task | domain | metric | {' | '.join(runs)} |", "|---" * (3 + len(runs)) + "|",
    ]  # fmt: skip
    for (domain, task), g in frame.groupby(["domain", "task"], sort=False):
        by_run = dict(zip(g["model"], g["value"], strict=True))
        cells = " | ".join(f"{by_run[r]:.4g}" if r in by_run else "-" for r in runs)
        lines.append(f"| {task} | {domain} | {g['metric'].iloc[0]} | {cells} |")
    return lines


def write_markdown(out: str | Path, text: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
