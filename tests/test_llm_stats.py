"""ftlab.llm.stats against independent computations (scipy) on planted per-sample outcomes:
a known difference (checkpoint worse than base on 12% of documents), a known null (the same
outcomes), the mean over benchmarks, and the seed interval."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ftlab.llm import stats

N = 2000


def _samples(values, benchmark="boolq", task=None, metric="acc", filt="none"):
    return [{"benchmark": benchmark, "task": task or benchmark, "doc_id": i, "filter": filt,
             "metrics": {metric: float(v)}} for i, v in enumerate(values)]  # fmt: skip


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    base = (rng.random(N) < 0.7).astype(float)
    ckpt = base.copy()
    flip = rng.choice(np.flatnonzero(base == 1), size=int(0.12 * N), replace=False)
    ckpt[flip] = 0.0  # the checkpoint forgets exactly these documents
    return base, ckpt


def test_known_difference_matches_scipy_bootstrap_and_paired_t(planted):
    base, ckpt = planted
    res = stats.compare_to_base(_samples(base), _samples(ckpt), {"boolq": "acc"}, iters=4000,
                                seed=1)  # fmt: skip
    r = res["benchmarks"]["boolq"]
    assert r["estimate"] == pytest.approx(ckpt.mean() - base.mean()) == pytest.approx(-0.12)
    assert r["n"] == N and r["base"] == pytest.approx(base.mean())
    ref = sps.bootstrap((base, ckpt), lambda b, c, axis=-1: c.mean(axis) - b.mean(axis),
                        paired=True, vectorized=True, n_resamples=4000, method="percentile",
                        confidence_level=0.95, random_state=2).confidence_interval  # fmt: skip
    # Two independent bootstrap streams: the interval ends agree to Monte Carlo error.
    assert r["ci_low"] == pytest.approx(ref.low, abs=0.003)
    assert r["ci_high"] == pytest.approx(ref.high, abs=0.003)
    # ... and with the paired t interval (n = 2000: the CLT regime).
    d = ckpt - base
    t_lo, t_hi = sps.t.interval(0.95, N - 1, loc=d.mean(), scale=sps.sem(d))
    assert r["ci_low"] == pytest.approx(t_lo, abs=0.004) and r["ci_high"] == pytest.approx(
        t_hi, abs=0.004
    )
    assert r["significant"] and r["p_value"] < 1e-3 and sps.ttest_rel(ckpt, base).pvalue < 1e-3


def test_known_null_is_not_significant(planted):
    base, _ = planted
    rng = np.random.default_rng(3)
    other = base.copy()
    # A checkpoint that fixes 40 documents and breaks 40 others: mean difference exactly 0.
    ones, zeros = np.flatnonzero(base == 1), np.flatnonzero(base == 0)
    other[rng.choice(ones, 40, replace=False)] = 0
    other[rng.choice(zeros, 40, replace=False)] = 1
    r = stats.compare_to_base(_samples(base), _samples(other), {"boolq": "acc"}, iters=4000,
                              seed=1)["benchmarks"]["boolq"]  # fmt: skip
    assert r["estimate"] == 0.0 and r["ci_low"] < 0 < r["ci_high"] and not r["significant"]
    ref = sps.ttest_rel(other, base)
    assert ref.pvalue > 0.9 and r["p_value"] > 0.8
    same = stats.compare_to_base(_samples(base), _samples(base), {"boolq": "acc"}, iters=500)
    s = same["benchmarks"]["boolq"]
    assert (s["estimate"], s["ci_low"], s["ci_high"], s["significant"]) == (0, 0, 0, False)


def test_seed003_sized_forgetting_shown_with_its_interval():
    """-0.0076 (seed 003's GRPO GSM8K mean): on 3,270 BoolQ documents a difference that small
    is within noise when the changes go both ways, and significant when they are all losses."""
    n = 3270
    base = np.zeros(n)
    base[:2300] = 1
    mixed = base.copy()
    mixed[:112] = 0  # 112 losses ...
    mixed[2300:2387] = 1  # ... and 87 gains: -25 / 3270 = -0.0076
    only_losses = base.copy()
    only_losses[:25] = 0
    for ckpt, significant in ((mixed, False), (only_losses, True)):
        r = stats.compare_to_base(_samples(base), _samples(ckpt), {"boolq": "acc"}, iters=4000,
                                  seed=0)["benchmarks"]["boolq"]  # fmt: skip
        assert r["estimate"] == pytest.approx(-25 / n) == pytest.approx(-0.0076, abs=1e-4)
        assert r["significant"] is significant
        t = sps.ttest_rel(ckpt, base)
        assert bool(t.pvalue < 0.05) is significant


def test_group_benchmark_pools_subtasks_and_mean_over_benchmarks(planted):
    base, ckpt = planted
    half = N // 2
    # "mmlu" as two subtasks of different size: the pooled mean is the size-weighted mean.
    b = _samples(base[:half], "mmlu", "mmlu_a") + _samples(base[half:], "mmlu", "mmlu_b")
    c = _samples(ckpt[:half], "mmlu", "mmlu_a") + _samples(ckpt[half:], "mmlu", "mmlu_b")
    null = _samples(base, "piqa", metric="acc_norm")
    res = stats.compare_to_base(b + null, c + null, {"mmlu": "acc", "piqa": "acc_norm"},
                                iters=3000, seed=5)  # fmt: skip
    m = res["benchmarks"]["mmlu"]
    assert m["estimate"] == pytest.approx(ckpt.mean() - base.mean()) and m["n"] == N
    mean = res["mean"]
    assert mean["estimate"] == pytest.approx((m["estimate"] + 0.0) / 2)
    # The mean's interval is half the mmlu interval (piqa's replicates are all 0).
    assert mean["ci_low"] == pytest.approx(m["ci_low"] / 2) and mean["n_benchmarks"] == 2
    with pytest.raises(ValueError, match="no per-sample 'acc' outcomes of 'boolq'"):
        stats.compare_to_base(b, c, {"boolq": "acc"})


def test_seed_interval_is_students_t():
    x = [-0.010, -0.004, -0.008, 0.001]
    s = stats.seed_interval(x, 0.9)
    lo, hi = sps.t.interval(0.9, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert s["n_seeds"] == 4 and s["sd"] == pytest.approx(np.std(x, ddof=1))
    one = stats.seed_interval([0.3])
    assert one["mean"] == 0.3 and math.isnan(one["ci_low"]) and one["n_seeds"] == 1


@pytest.mark.parametrize("losses,gains", [(4, 0), (5, 0), (10, 3), (0, 6)])
def test_binary_benchmarks_are_decided_by_exact_mcnemar(losses, gains):
    """3000 documents, the checkpoint differs from the base on losses + gains of them: the
    p-value is scipy's exact binomial test on the discordant documents, whatever the bootstrap
    says; 4 losses of 3000 are not significant (exact p = 0.125; the bootstrap gave ~0.04)."""
    n = 3000
    base = np.zeros(n)
    base[:2000] = 1
    ckpt = base.copy()
    ckpt[:losses] = 0
    ckpt[2000 : 2000 + gains] = 1
    res = stats.compare_to_base(_samples(base), _samples(ckpt), {"boolq": "acc"}, iters=4000)
    r = res["benchmarks"]["boolq"]
    ref = sps.binomtest(min(losses, gains), losses + gains, 0.5).pvalue
    assert r["p_value"] == pytest.approx(ref, rel=1e-9)
    assert r["significant"] is bool(ref < 0.05) and r["test"].startswith("exact McNemar")
    assert r["ci_method"] == "paired percentile bootstrap"
    # one benchmark: the mean's sign-flip test is the same exact test
    assert res["mean"]["p_value"] == pytest.approx(ref, rel=1e-9)
    assert res["mean"]["significant"] is r["significant"]
    if (losses, gains) == (4, 0):
        assert r["p_value"] == pytest.approx(0.125) and not r["significant"]
        assert r["ci_high"] < 0  # the interval excludes 0; the exact test decides


def test_one_document_is_never_significant_and_p_is_never_zero():
    one = stats.compare_to_base(_samples([0.0]), _samples([1.0]), {"boolq": "acc"}, iters=999)
    r = one["benchmarks"]["boolq"]
    assert (r["ci_low"], r["ci_high"]) == (1.0, 1.0)  # every resample is the one document
    assert r["p_value"] == 1.0 and not r["significant"]  # binomtest(1, 1)
    assert one["mean"]["p_value"] == 1.0 and not one["mean"]["significant"]  # 2 of 2 flips
    # graded outcomes (truthfulqa_mc2-like): the bootstrap p, never 0, and too few documents
    base = _samples([0.2] * 5, "tqa")
    ckpt = _samples([0.9] * 5, "tqa")
    few = stats.compare_to_base(base, ckpt, {"tqa": "acc"}, iters=999)["benchmarks"]["tqa"]
    assert few["p_value"] == pytest.approx(2 / 1000) and not few["significant"]
    assert "too few" in few["note"] and few["test"] == "paired bootstrap"
    base = _samples([0.2] * 30, "tqa")
    ckpt = _samples([0.9] * 30, "tqa")
    many = stats.compare_to_base(base, ckpt, {"tqa": "acc"}, iters=999)["benchmarks"]["tqa"]
    assert many["p_value"] == pytest.approx(2 / 1000) and many["significant"]
