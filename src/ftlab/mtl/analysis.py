"""Evolution and comparison of a multi-task study's evaluations.

Inputs: each run's mtl_manifest.json (kept checkpoints, the selected one) and each kept
checkpoint's mtl_eval.json / mtl_eval.samples.jsonl (ftlab.mtl.evaluate).
- scores: one row per run x kept checkpoint x task (metric value and mean reward).
- evolution: per run x checkpoint x domain, the domain reward (unweighted mean of its tasks'
  mean rewards; domain "all" = every task), with the run's selected checkpoint and last epoch.
- overfitting, per method x domain on the seed-mean curve: the peak (best mean reward) is not
  the last checkpoint and EVERY later checkpoint lies more than `overfit_drop` below it, for at
  least `overfit_checkpoints` checkpoints (a peak then a sustained decline; a single dip or a
  recovery is not flagged). Curves compare runs at the same epochs; a run that stopped early
  contributes up to its last checkpoint.
- comparison, per method != baseline, at each run's SELECTED checkpoint (the one a user would
  ship): method minus baseline per task, per domain and overall, with paired bootstrap
  intervals over samples and seeds (ftlab.mtl.bootstrap); seed S of the method is paired with
  seed S of the baseline, and samples by their id.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ftlab.io import read_json, read_jsonl
from ftlab.mtl.bootstrap import paired_bootstrap

ALL = "all"


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


def overfitting(evolution: pd.DataFrame, drop: float, min_after: int) -> pd.DataFrame:
    """Per method x domain: peak epoch and reward on the seed-mean curve, and the flag."""
    out = []
    for (method, domain), g in evolution.groupby(["method", "domain"], sort=True):
        curve = g.groupby("epoch")["reward"].mean().sort_index()
        peak_epoch = int(curve.idxmax())
        peak = float(curve.max())
        after = curve[curve.index > peak_epoch]
        flag = len(after) >= min_after and bool((after < peak - drop).all())
        out.append({
            "method": method, "domain": domain, "peak_epoch": peak_epoch, "peak_reward": peak,
            "last_epoch": int(curve.index[-1]), "last_reward": float(curve.iloc[-1]),
            "checkpoints_after_peak": len(after), "overfit": flag,
        })  # fmt: skip
    return pd.DataFrame(out)


def _outcomes(samples_paths, selected: dict[str, int]) -> dict[str, dict[str, dict]]:
    """model -> task -> {sample id: reward} at the model's selected checkpoint."""
    out: dict[str, dict[str, dict]] = {}
    for path in samples_paths:
        model, step = _eval_dir(path)
        if selected.get(model) != step:
            continue
        per_task: dict[str, dict] = defaultdict(dict)
        for s in read_jsonl(path):
            per_task[s["task"]][s["sample"]] = float(s["reward"])
        out[model] = per_task
    return out


def comparison_frame(samples_paths, manifests, runs, domains, *, confidence, n_resamples,
                     seed) -> pd.DataFrame:  # fmt: skip
    selected = {m: man["selected"]["step"] for m, man in manifests.items()}
    outcomes = _outcomes(samples_paths, selected)
    missing = sorted(set(runs) - set(outcomes))
    if missing:
        raise ValueError(f"no evaluation of the selected checkpoint of {missing}")
    by_method: dict[str, dict[int, str]] = defaultdict(dict)
    for name, r in runs.items():
        by_method[r["method"]][r["seed"]] = name
    base = by_method["baseline"]
    groups = [(d, "domain", ts) for d, ts in domains.items()]
    groups += [(t, "task", [t]) for ts in domains.values() for t in ts]
    groups.append((ALL, "all", [t for ts in domains.values() for t in ts]))
    rows = []
    for method, seeds in sorted(by_method.items()):
        if method == "baseline":
            continue
        common = sorted(set(seeds) & set(base))
        if not common:
            raise ValueError(f"{method} and baseline share no seed to pair")
        for name, level, tasks in groups:
            m_arr, b_arr = [], []
            for t in tasks:
                ids = sorted(outcomes[base[common[0]]][t])
                for s in common:
                    for model in (seeds[s], base[s]):
                        if sorted(outcomes[model][t]) != ids:
                            raise ValueError(f"{model}: task {t} was scored on other samples")
                m_arr.append([[outcomes[seeds[s]][t][i] for i in ids] for s in common])
                b_arr.append([[outcomes[base[s]][t][i] for i in ids] for s in common])
            ci = paired_bootstrap(m_arr, b_arr, n_resamples=n_resamples,
                                  confidence=confidence, seed=seed)  # fmt: skip
            rows.append({
                "method": method, "level": level, "name": name,
                "domain": name if level == "domain" else next(
                    (d for d, ts in domains.items() if tasks[0] in ts), ALL) if level == "task"
                else ALL,
                "method_reward": float(np.mean([np.mean(a) for a in m_arr])),
                "baseline_reward": float(np.mean([np.mean(a) for a in b_arr])),
                "diff": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                "confidence": ci.confidence, "n_seeds": ci.n_seeds, "n_samples": ci.n_samples,
                "flag": ci.flag,
            })  # fmt: skip
    return pd.DataFrame(rows)
