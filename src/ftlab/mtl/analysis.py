"""Evolution and comparison of a multi-task study's evaluations.

Inputs: each run's mtl_manifest.json (kept checkpoints, the selected one) and each kept
checkpoint's mtl_eval.json / mtl_eval.samples.jsonl (ftlab.mtl.evaluate).
- scores: one row per run x kept checkpoint x task (metric value and mean reward).
- evolution: per run x checkpoint x domain, the domain reward (unweighted mean of its tasks'
  mean rewards; domain "all" = every task), with the run's selected checkpoint and last epoch.
- overfitting, per RUN x domain (each seed's own curve): the peak (best reward) is not the last
  checkpoint and EVERY later checkpoint lies more than `overfit_drop` below it, for at least
  `overfit_checkpoints` checkpoints (a peak then a sustained decline; a single dip or a recovery
  is not flagged); per method x domain the report gives each seed's flag and the count. A
  seed-mean curve is not used: seeds that stop at different epochs would make it drop where
  only the weaker seeds continue (a false flag).
- comparison, per method != baseline, at each run's LAST checkpoint (seed 000's
  run_evaluation_comparison.sh "finds latest baseline and MTL checkpoints"; option
  `mtl.report.checkpoint: selected` = the best-validated one): method minus baseline per task,
  per domain and overall, with paired bootstrap intervals over samples and seeds
  (ftlab.mtl.bootstrap); seed S of the method is paired with seed S of the baseline, and
  samples by their id. Two overall rows: `mean_over_tasks` (level all: the unweighted mean
  over every task) and seed 000's `sum_over_domains` (level domain_sum; analyze_results.py:
  the sum over domains of the domain differences, its "Overall MTL Effectiveness" Positive
  when that sum is > 0, else Mixed - column verdict). Every row has seed 000's
  improvement_pct = (method - baseline) / baseline x 100, 0 when the baseline is not > 0
  (the seed computes it per domain; the same formula on the other rows).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ftlab.io import read_json, read_jsonl
from ftlab.mtl.bootstrap import paired_bootstrap

ALL = "all"
TASK_MEAN = "mean_over_tasks"  # the comparison's level-all row: every task counts once
DOMAIN_SUM = "sum_over_domains"  # seed 000's overall: the domain differences summed


def improvement_pct(method: float, baseline: float) -> float:
    """Seed 000's improvement_pct (analyze_results.py compare_models): 0 unless baseline > 0."""
    return (method - baseline) / baseline * 100 if baseline > 0 else 0.0


def seed_verdict(domain_sum: float) -> str:
    """Seed 000's "Overall MTL Effectiveness": the summed domain improvements > 0."""
    return "Positive" if domain_sum > 0 else "Mixed"


def _eval_dir(path: str | Path) -> tuple[str, int]:
    p = Path(path)
    return p.parent.parent.name, int(p.parent.name.split("-")[1])


def scores_frame(eval_paths, manifests: dict[str, dict], runs: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for path in eval_paths:
        model, step = _eval_dir(path)
        kept = {c["step"]: c for c in manifests[model]["checkpoints"]}
        if step not in kept:
            raise ValueError(f"{path}: step {step} is not a kept checkpoint of {model}")
        for t in read_json(path)["tasks"]:
            rows.append({
                "model": model, **runs[model], "step": step, "epoch": kept[step]["epoch"],
                "selected": kept[step]["selected"], "validation": kept[step]["validation"], **t,
            })  # fmt: skip
    cols = ["model", "method", "seed", "step", "epoch", "selected", "validation", "task",
            "domain", "metric", "value", "n", "reward"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "step", "domain", "task"])


def evolution_frame(scores: pd.DataFrame, domains: dict[str, list[str]], manifests) -> pd.DataFrame:
    rows = []
    for (model, step), g in scores.groupby(["model", "step"], sort=True):
        first = g.iloc[0]
        by_task = dict(zip(g["task"], g["reward"], strict=True))
        for domain, tasks in [*domains.items(), (ALL, [t for ts in domains.values() for t in ts])]:
            rows.append({
                "model": model, "method": first["method"], "seed": first["seed"],
                "step": step, "epoch": first["epoch"], "selected": bool(first["selected"]),
                "last_epoch": manifests[model]["last_epoch"],
                "stop_reason": manifests[model]["stop_reason"], "domain": domain,
                "reward": float(np.mean([by_task[t] for t in tasks])),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _overfit_curve(curve: pd.Series, drop: float, min_after: int) -> dict:
    peak_epoch = int(curve.idxmax())
    peak = float(curve.max())
    after = curve[curve.index > peak_epoch]
    return {
        "peak_epoch": peak_epoch, "peak_reward": peak, "last_epoch": int(curve.index[-1]),
        "last_reward": float(curve.iloc[-1]), "checkpoints_after_peak": len(after),
        "overfit": len(after) >= min_after and bool((after < peak - drop).all()),
    }  # fmt: skip


def overfitting_runs(evolution: pd.DataFrame, drop: float, min_after: int) -> pd.DataFrame:
    """Per run x domain: its own curve's peak epoch and reward, and the flag."""
    out = []
    for (model, domain), g in evolution.groupby(["model", "domain"], sort=True):
        curve = g.groupby("epoch")["reward"].mean().sort_index()
        first = g.iloc[0]
        out.append({"method": first["method"], "seed": int(first["seed"]), "model": model,
                    "domain": domain, **_overfit_curve(curve, drop, min_after)})  # fmt: skip
    return pd.DataFrame(out).sort_values(["method", "domain", "seed"], ignore_index=True)


def overfitting(evolution: pd.DataFrame, drop: float, min_after: int) -> pd.DataFrame:
    """Per method x domain: how many seeds overfit (each on its own curve), which ones, and
    `overfit` = at least one seed does."""
    runs = overfitting_runs(evolution, drop, min_after)
    out = []
    for (method, domain), g in runs.groupby(["method", "domain"], sort=True):
        flagged = g[g["overfit"]]
        out.append({
            "method": method, "domain": domain, "n_seeds": len(g),
            "n_overfit": len(flagged), "overfit_seeds": ",".join(map(str, flagged["seed"])),
            "overfit": bool(len(flagged)),
        })  # fmt: skip
    return pd.DataFrame(out)


def _outcomes(samples_paths, chosen: dict[str, int]) -> tuple[dict, dict]:
    """(model -> task -> {sample id: reward}, model -> samples file) at each model's compared
    checkpoint."""
    out: dict[str, dict[str, dict]] = {}
    files: dict[str, str] = {}
    for path in samples_paths:
        model, step = _eval_dir(path)
        if chosen.get(model) != step:
            continue
        per_task: dict[str, dict] = defaultdict(dict)
        for s in read_jsonl(path):
            per_task[s["task"]][s["sample"]] = float(s["reward"])
        out[model] = per_task
        files[model] = str(path)
    return out, files


CHECKPOINTS = ("last", "selected")


def compared_steps(manifests: dict[str, dict], checkpoint: str = "last") -> dict[str, int]:
    """model -> the step compared: its last kept checkpoint (the last epoch trained; seed
    000's "latest checkpoint") or, `selected`, the best-validated one."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"mtl.report.checkpoint must be one of {CHECKPOINTS}, not "
                         f"{checkpoint!r}")  # fmt: skip
    if checkpoint == "selected":
        return {m: man["selected"]["step"] for m, man in manifests.items()}
    return {m: max(man["checkpoints"], key=lambda c: c["epoch"])["step"]
            for m, man in manifests.items()}  # fmt: skip


def _combine(per_task: list, weights: list[float] | None) -> float:
    """The tasks' mean rewards averaged (weights None) or summed with weights."""
    means = [np.mean(a) for a in per_task]
    if weights is None:
        return float(np.mean(means))
    return float(sum(w * m for w, m in zip(weights, means, strict=True)))


def comparison_frame(samples_paths, manifests, runs, domains, *, confidence, n_resamples,
                     seed, checkpoint: str = "last") -> pd.DataFrame:  # fmt: skip
    chosen = compared_steps(manifests, checkpoint)
    outcomes, files = _outcomes(samples_paths, chosen)
    missing = sorted(set(runs) - set(outcomes))
    if missing:
        raise ValueError(f"no evaluation samples of the {checkpoint} checkpoint of {missing} "
                         f"(steps {[chosen.get(m) for m in missing]})")  # fmt: skip
    for model in runs:
        for t in (t for ts in domains.values() for t in ts):
            if not outcomes[model].get(t):
                raise ValueError(f"{files[model]}: no samples of task {t!r} (model {model}, "
                                 f"{checkpoint} checkpoint)")  # fmt: skip
    by_method: dict[str, dict[int, str]] = defaultdict(dict)
    for name, r in runs.items():
        by_method[r["method"]][r["seed"]] = name
    base = by_method["baseline"]
    every = [t for ts in domains.values() for t in ts]
    groups = [(d, "domain", ts, None) for d, ts in domains.items()]
    groups += [(t, "task", [t], None) for t in every]
    groups.append((TASK_MEAN, "all", every, None))
    # seed 000's overall: sum over domains of (mean over the domain's tasks), as task weights
    groups.append((DOMAIN_SUM, "domain_sum", every,
                   [1 / len(ts) for ts in domains.values() for _ in ts]))  # fmt: skip
    domain_of = {t: d for d, ts in domains.items() for t in ts}
    rows = []
    for method, seeds in sorted(by_method.items()):
        if method == "baseline":
            continue
        common = sorted(set(seeds) & set(base))
        if not common:
            raise ValueError(f"{method} and baseline share no seed to pair")
        for name, level, tasks, weights in groups:
            m_arr, b_arr = [], []
            for t in tasks:
                ids = sorted(outcomes[base[common[0]]][t])
                for s in common:
                    for model in (seeds[s], base[s]):
                        if sorted(outcomes[model][t]) != ids:
                            raise ValueError(f"{model}: task {t} was scored on other samples")
                m_arr.append([[outcomes[seeds[s]][t][i] for i in ids] for s in common])
                b_arr.append([[outcomes[base[s]][t][i] for i in ids] for s in common])
            ci = paired_bootstrap(m_arr, b_arr, n_resamples=n_resamples, confidence=confidence,
                                  seed=seed, weights=weights)  # fmt: skip
            method_reward, baseline_reward = (_combine(a, weights) for a in (m_arr, b_arr))
            rows.append({
                "method": method, "level": level, "name": name,
                "domain": {"domain": name, "task": domain_of[tasks[0]]}.get(level, ALL),
                "method_reward": method_reward, "baseline_reward": baseline_reward,
                "diff": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                "confidence": ci.confidence, "n_seeds": ci.n_seeds, "n_samples": ci.n_samples,
                "flag": ci.flag,
                "improvement_pct": improvement_pct(method_reward, baseline_reward),
                "verdict": seed_verdict(method_reward - baseline_reward)
                if level == "domain_sum" else "",
            })  # fmt: skip
    return pd.DataFrame(rows)
