"""Paired bootstrap confidence intervals for "method minus baseline".

Both methods are scored on the same evaluation samples, and run i of the method shares its
seed with run i of the baseline, so differences are formed per (seed, sample) pair:
D_t[s, n] = method_t[s, n] - baseline_t[s, n] for task t. The statistic is the mean difference;
for a domain, the unweighted mean over its tasks of the task means (each task counts once,
however many samples it has); with `weights`, sum_t w_t mean(D_t) (seed 000's overall, the sum
over domains of the domain differences: w_t = 1 / the size of t's domain).

Resampling is two-level when there are several seeds: each replicate draws the seeds (pairs)
with replacement, and, independently per task, the samples with replacement; with one seed it
is the ordinary paired bootstrap over samples (the case tests/test_mtl_stats.py checks against
`scipy.stats.bootstrap(..., paired=True, method="percentile")`). The interval is the percentile
interval of the replicates (numpy's linear interpolation, as scipy's percentile method).
An improvement (regression) is flagged when the whole interval lies above (below) zero at the
stated confidence level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CHUNK = 1000  # replicates per vectorised batch (bounds memory at CHUNK x samples)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n_seeds: int
    n_samples: int

    @property
    def flag(self) -> str:
        if self.low > 0:
            return "improvement"
        if self.high < 0:
            return "regression"
        return ""


def _as_pairs(method, baseline) -> np.ndarray:
    m, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if m.ndim == 1:
        m, b = m[None, :], b[None, :]
    if m.shape != b.shape or m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(
            f"paired outcomes need equal [seeds, samples] shapes, got {m.shape} and {b.shape}"
        )
    return m - b


def paired_bootstrap(
    method: Sequence,
    baseline: Sequence,
    *,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    weights: Sequence[float] | None = None,
) -> Interval:
    """Interval of mean(method - baseline) over the tasks of `method`/`baseline` (weights: of
    sum_t weights[t] * mean(method_t - baseline_t) instead).

    method, baseline: one entry per task, each [seeds, samples] (or [samples] for one seed)
    of per-sample outcomes, seed rows in the same order for both methods.
    """
    diffs = [_as_pairs(m, b) for m, b in zip(method, baseline, strict=True)]
    if not diffs:
        raise ValueError("no task to compare")
    if weights is not None and len(weights) != len(diffs):
        raise ValueError(f"{len(weights)} weights for {len(diffs)} tasks")
    n_seeds = diffs[0].shape[0]
    if any(d.shape[0] != n_seeds for d in diffs):
        raise ValueError("every task needs the same seeds")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    if weights is None:
        estimate = float(np.mean([d.mean() for d in diffs]))
    else:
        estimate = float(sum(w * d.mean() for w, d in zip(weights, diffs, strict=True)))
    stats = np.empty(n_resamples)
    for lo in range(0, n_resamples, CHUNK):
        b = min(CHUNK, n_resamples - lo)
        if n_seeds > 1:
            seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=b) / n_seeds
        else:
            seed_w = np.ones((b, 1))
        total = np.zeros(b)
        for t, d in enumerate(diffs):
            n = d.shape[1]
            idx = rng.integers(0, n, size=(b, n))
            # mean over the resampled samples of each seed row, then the seed-weighted mean
            per_seed = d[:, idx].mean(axis=2).T  # [b, seeds]
            task = (seed_w * per_seed).sum(axis=1)
            total += task if weights is None else weights[t] * task
        stats[lo : lo + b] = total / len(diffs) if weights is None else total
    alpha = 1 - confidence
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(
        estimate=estimate,
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        n_seeds=n_seeds,
        n_samples=int(sum(d.shape[1] for d in diffs)),
    )
