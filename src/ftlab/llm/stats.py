"""Uncertainty of forgetting: paired bootstrap of checkpoint vs base, and seed aggregation.

Forgetting on a benchmark is mean(checkpoint outcome) - mean(base outcome) over the same
documents. Both models answer the same documents, so the difference is resampled in pairs:
each bootstrap replicate draws documents with replacement and takes the difference of the two
means on that draw (the percentile bootstrap). A group benchmark (mmlu: 57 subtasks) pools its
documents, which is lm-eval's size-weighted group mean. The interval is the replicates'
(alpha/2, 1 - alpha/2) percentiles, the two-sided p-value is 2 x the smaller tail fraction of
replicates at or beyond 0 (the percentile-bootstrap p-value), and a difference is "significant"
when the interval excludes 0. The mean over benchmarks (Key Results) gets its interval from the
mean of the per-benchmark replicates (benchmarks are independent document sets, each resampled
on its own).

Across seeds (a run trained with several seeds), a mean gets Student's t interval
(mean +- t_{n-1} x s / sqrt(n)); with one seed there is no interval (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def outcomes_by_doc(samples: Iterable[dict], metric: str) -> dict[str, dict[tuple, float]]:
    """{benchmark: {(task, doc_id): outcome}} of lm_eval.samples.jsonl rows for `metric`
    ("acc" or "acc,none": the metric of the "none" filter unless one is named)."""
    name, _, filt = metric.partition(",")
    filt = filt or "none"
    out: dict[str, dict[tuple, float]] = {}
    for s in samples:
        if s.get("filter", "none") != filt or name not in s.get("metrics", {}):
            continue
        value = s["metrics"][name]
        out.setdefault(s["benchmark"], {})[(s["task"], s["doc_id"])] = float(value)
    return out


def paired_arrays(base: dict[tuple, float], ckpt: dict[tuple, float]) -> tuple[np.ndarray, ...]:
    """The two models' outcomes on the documents both answered, in one order."""
    keys = sorted(set(base) & set(ckpt), key=lambda k: (str(k[0]), str(k[1])))
    if not keys:
        raise ValueError("the checkpoint and the base model share no scored document")
    return (np.array([base[k] for k in keys], float), np.array([ckpt[k] for k in keys], float))


def bootstrap_replicates(
    base: np.ndarray, ckpt: np.ndarray, iters: int, rng: np.random.Generator
) -> np.ndarray:
    """`iters` replicates of mean(ckpt) - mean(base), documents drawn in pairs."""
    diff = ckpt - base
    n = len(diff)
    out = np.empty(iters)
    chunk = max(1, 2_000_000 // max(n, 1))  # bounded memory for 100k-document benchmarks
    for lo in range(0, iters, chunk):
        hi = min(iters, lo + chunk)
        idx = rng.integers(0, n, size=(hi - lo, n))
        out[lo:hi] = diff[idx].mean(axis=1)
    return out


def interval(replicates: np.ndarray, estimate: float, confidence: float) -> dict:
    """Percentile interval, two-sided percentile-bootstrap p-value, significance."""
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    below, above = np.mean(replicates <= 0), np.mean(replicates >= 0)
    p = min(1.0, 2 * min(below, above))
    return {
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p),
        "significant": bool(low > 0 or high < 0),
    }


def compare_to_base(
    base_samples: list[dict], ckpt_samples: list[dict], benchmarks: dict[str, str], *,
    iters: int = 10000, seed: int = 0, confidence: float = 0.95,
) -> dict:  # fmt: skip
    """Paired bootstrap of checkpoint vs base per benchmark and for the mean over benchmarks.

    benchmarks: {benchmark: metric} (llm.benchmarks). Returns {"benchmarks": {name: {estimate,
    ci_low, ci_high, p_value, significant, n, base, checkpoint}}, "mean": {...}}.
    """
    rng = np.random.default_rng(seed)
    per, reps = {}, []
    for name, metric in benchmarks.items():
        base = outcomes_by_doc(base_samples, metric).get(name)
        ckpt = outcomes_by_doc(ckpt_samples, metric).get(name)
        if not base or not ckpt:
            missing = "base model" if not base else "checkpoint"
            raise ValueError(f"no per-sample {metric!r} outcomes of {name!r} for the {missing}")
        b, c = paired_arrays(base, ckpt)
        r = bootstrap_replicates(b, c, iters, rng)
        reps.append(r)
        per[name] = {**interval(r, c.mean() - b.mean(), confidence), "n": len(b),
                     "base": float(b.mean()), "checkpoint": float(c.mean())}  # fmt: skip
    mean_reps = np.mean(reps, axis=0)
    estimate = float(np.mean([v["estimate"] for v in per.values()]))
    return {
        "benchmarks": per,
        "mean": {**interval(mean_reps, estimate, confidence), "n_benchmarks": len(per)},
        "iters": iters,
        "seed": seed,
        "confidence": confidence,
    }


def seed_interval(values: Iterable[float], confidence: float = 0.95) -> dict:
    """Mean over seeds with Student's t interval; no interval (NaN) from one seed."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    n = len(x)
    if n == 0:
        return {
            "mean": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "n_seeds": 0,
            "sd": math.nan,
        }  # noqa: E501
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 1, "sd": math.nan}  # noqa: E501
    sd = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_seeds": n, "sd": sd}
