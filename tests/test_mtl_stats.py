"""Paired bootstrap intervals against scipy.stats.bootstrap and a direct two-level loop."""

import numpy as np
import pytest
from scipy import stats

from ftlab.mtl.bootstrap import paired_bootstrap

RNG = np.random.default_rng(12345)
# fixed per-sample outcomes of two methods on the same 300 samples: continuous scores in
# [0, 1] (as the geometry tasks' scores), correlated as paired outcomes are
BASELINE = RNG.beta(2, 2, size=300)
METHOD = np.clip(BASELINE + RNG.normal(0.03, 0.1, size=300), 0, 1)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_one_seed_matches_scipy_paired_percentile_bootstrap(confidence):
    ours = paired_bootstrap([METHOD], [BASELINE], n_resamples=40000, confidence=confidence, seed=1)
    ref = stats.bootstrap(
        (METHOD, BASELINE),
        lambda m, b, axis=-1: np.mean(m - b, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=40000,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(2),
    )
    assert ours.estimate == pytest.approx(np.mean(METHOD - BASELINE))
    # different random streams: equal up to Monte-Carlo error (about 1/100 of the width)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.03 * width)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.03 * width)


def test_flags_follow_the_interval():
    up = paired_bootstrap([np.ones(200)], [np.zeros(200)], n_resamples=200)
    assert up.flag == "improvement" and up.low == up.high == 1.0
    down = paired_bootstrap([np.zeros(50)], [np.r_[np.ones(40), np.zeros(10)]], n_resamples=2000)
    assert down.flag == "regression"
    same = paired_bootstrap([METHOD], [METHOD], n_resamples=200)
    assert same.flag == "" and same.low == same.high == 0.0


def test_two_level_resampling_matches_a_direct_loop():
    """Seeds and samples resampled: compare with a plain loop using the same RNG draws."""
    rng = np.random.default_rng(7)
    m = [rng.random((3, 40)), rng.random((3, 25))]
    b = [rng.random((3, 40)), rng.random((3, 25))]
    got = paired_bootstrap(m, b, n_resamples=500, confidence=0.9, seed=4)

    draw = np.random.default_rng(4)
    reps = []
    seed_w = draw.multinomial(3, np.full(3, 1 / 3), size=500)
    idx = [draw.integers(0, d.shape[1], size=(500, d.shape[1])) for d in m]
    for r in range(500):
        task_means = []
        for t in range(2):
            d = m[t] - b[t]
            rows = np.repeat(np.arange(3), seed_w[r])  # the resampled seeds
            task_means.append(d[rows][:, idx[t][r]].mean())
        reps.append(np.mean(task_means))
    low, high = np.percentile(reps, [5, 95])
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    assert got.estimate == pytest.approx(np.mean([(m[t] - b[t]).mean() for t in range(2)]))
    assert got.n_seeds == 3 and got.n_samples == 65


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="equal \\[seeds, samples\\] shapes"):
        paired_bootstrap([np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap([np.ones((2, 3)), np.ones((1, 3))], [np.ones((2, 3)), np.ones((1, 3))])


def test_weighted_statistic_matches_a_direct_loop():
    """weights: the statistic is sum_t w_t mean(D_t) (seed 000's sum over domains: w = 1 /
    the domain's task count); same RNG draws as the unweighted bootstrap."""
    rng = np.random.default_rng(8)
    m = [rng.random((2, 30)), rng.random((2, 12)), rng.random((2, 20))]
    b = [rng.random((2, 30)), rng.random((2, 12)), rng.random((2, 20))]
    w = [0.5, 0.5, 1.0]  # domains {t0, t1} and {t2}
    got = paired_bootstrap(m, b, n_resamples=400, confidence=0.9, seed=2, weights=w)

    draw = np.random.default_rng(2)
    seed_w = draw.multinomial(2, np.full(2, 1 / 2), size=400)
    idx = [draw.integers(0, d.shape[1], size=(400, d.shape[1])) for d in m]
    reps = []
    for r in range(400):
        rows = np.repeat(np.arange(2), seed_w[r])
        reps.append(sum(w[t] * (m[t] - b[t])[rows][:, idx[t][r]].mean() for t in range(3)))
    low, high = np.percentile(reps, [5, 95])
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    assert got.estimate == pytest.approx(sum(w[t] * (m[t] - b[t]).mean() for t in range(3)))
    with pytest.raises(ValueError, match="2 weights for 3 tasks"):
        paired_bootstrap(m, b, weights=[1.0, 1.0])
