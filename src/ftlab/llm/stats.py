"""Uncertainty of forgetting: paired bootstrap of checkpoint vs base, and seed aggregation.

Forgetting on a benchmark is mean(checkpoint outcome) - mean(base outcome) over the same
documents. Both models answer the same documents, so the difference is resampled in pairs:
each bootstrap replicate draws documents with replacement and takes the difference of the two
means on that draw (the percentile bootstrap). A group benchmark (mmlu: 57 subtasks) pools its
documents, which is lm-eval's size-weighted group mean. The interval is the replicates'
(alpha/2, 1 - alpha/2) percentiles (alpha = 1 - llm.stats.confidence).

The p-value, and "significant" (p < alpha), come from a test chosen by the outcomes (the
result's ``test`` says which; ``ci_method`` says where the interval comes from):

- 0/1 outcomes (acc, acc_norm, exact_match, ifeval's strict accuracy): the exact McNemar test,
  a binomial test on the discordant documents (= the exact sign-flip test of 0/1 differences).
  The bootstrap's p-value is anti-conservative when few documents change: 4 losses and no gain
  in 3000 documents give a bootstrap p ~ 0.04, the exact p is 0.125.
- other outcomes (truthfulqa_mc2's probability mass): the bootstrap p-value
  2 x (1 + the smaller count of replicates at or beyond 0) / (1 + iters), never 0; with fewer
  than ``ftlab.stats.MIN_BOOTSTRAP_N`` documents it is not called significant (a note says so).
- the mean over benchmarks (Key Results): its interval is the percentile interval of the mean
  of the per-benchmark replicates (benchmarks are independent document sets, each resampled on
  its own); its p-value is the sign-flip permutation test of the same statistic (each document's
  difference weighted 1 / (benchmarks x its benchmark's documents)): exact when at most
  ``ftlab.stats.EXACT_MAX`` documents differ, else Monte Carlo with (1 + hits) / (1 + iters).

The interval and the test can disagree near the boundary (an interval just excluding 0 with
p just above alpha); the test decides.

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


CI_METHOD = "paired percentile bootstrap"


def interval(replicates: np.ndarray, estimate: float, confidence: float) -> dict:
    """Percentile interval and the two-sided bootstrap p-value (never 0)."""
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    tail = min(int(np.sum(replicates <= 0)), int(np.sum(replicates >= 0)))
    p = 1.0 if np.all(replicates == 0) else min(1.0, 2 * (1 + tail) / (1 + len(replicates)))
    return {
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p),
    }


def benchmark_test(base: np.ndarray, ckpt: np.ndarray, boot: dict, alpha: float) -> dict:
    """p-value, significance and the test's name for one benchmark: exact McNemar for 0/1
    outcomes, else the bootstrap's p (`boot`, from interval()) unless there are too few
    documents."""
    from ftlab import stats

    if stats.is_binary(base, ckpt):
        r = stats.mcnemar(ckpt, base, exact=True)
        return {"p_value": r.p_value, "significant": bool(r.p_value < alpha),
                "test": f"exact McNemar ({r.detail})", "note": ""}  # fmt: skip
    p, note = boot["p_value"], ""
    if len(base) < stats.MIN_BOOTSTRAP_N:
        note = (f"{len(base)} documents: too few for a bootstrap p-value "
                f"(at least {stats.MIN_BOOTSTRAP_N}); not called significant")  # fmt: skip
    return {"p_value": p, "significant": bool(p < alpha and not note),
            "test": "paired bootstrap", "note": note}  # fmt: skip


def compare_to_base(
    base_samples: list[dict], ckpt_samples: list[dict], benchmarks: dict[str, str], *,
    iters: int = 10000, seed: int = 0, confidence: float = 0.95,
) -> dict:  # fmt: skip
    """Checkpoint vs base per benchmark and for the mean over benchmarks: bootstrap interval,
    p-value of the test the module docstring describes, significance (p < 1 - confidence).

    benchmarks: {benchmark: metric} (llm.benchmarks). Returns {"benchmarks": {name: {estimate,
    ci_low, ci_high, p_value, significant, test, ci_method, note, n, base, checkpoint}},
    "mean": {...}}.
    """
    from ftlab import stats

    if not 0 < confidence < 1:
        raise ValueError(f"llm.stats.confidence must lie strictly between 0 and 1: {confidence}")
    alpha = 1 - confidence
    rng = np.random.default_rng(seed)
    per, reps, weighted = {}, [], []
    for name, metric in benchmarks.items():
        base = outcomes_by_doc(base_samples, metric).get(name)
        ckpt = outcomes_by_doc(ckpt_samples, metric).get(name)
        if not base or not ckpt:
            missing = "base model" if not base else "checkpoint"
            raise ValueError(f"no per-sample {metric!r} outcomes of {name!r} for the {missing}")
        b, c = paired_arrays(base, ckpt)
        r = bootstrap_replicates(b, c, iters, rng)
        reps.append(r)
        weighted.append((c - b) / len(b))
        boot = interval(r, c.mean() - b.mean(), confidence)
        per[name] = {**boot, **benchmark_test(b, c, boot, alpha), "ci_method": CI_METHOD,
                     "n": len(b), "base": float(b.mean()),
                     "checkpoint": float(c.mean())}  # fmt: skip
    mean_reps = np.mean(reps, axis=0)
    estimate = float(np.mean([v["estimate"] for v in per.values()]))
    d = np.concatenate(weighted) / len(per)  # sum(d) is the mean over benchmarks
    flip = stats.paired_permutation(d, np.zeros_like(d), n_resamples=iters, seed=seed)
    mean = {**interval(mean_reps, estimate, confidence), "p_value": flip.p_value,
            "significant": bool(flip.p_value < alpha),
            "test": f"sign-flip permutation of the weighted differences ({flip.detail})",
            "note": "", "ci_method": CI_METHOD, "n_benchmarks": len(per)}  # fmt: skip
    return {
        "benchmarks": per,
        "mean": mean,
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
