"""pass@k: the unbiased estimator against the closed form and a brute-force enumeration."""

import itertools
from math import comb

import pytest

from ftlab.tir.passk import mean_pass_at_k, pass_at_k, pass_at_k_curve


@pytest.mark.parametrize("n,c", [(32, 0), (32, 1), (32, 5), (32, 31), (32, 32), (100, 37), (10, 3)])
def test_against_the_closed_form(n, c):
    for k in range(1, n + 1):
        expected = 1.0 if n - c < k else 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4, 6, 7])
def test_against_brute_force_enumeration(n):
    # every subset of size k of n samples (c of them correct): the fraction with a correct one
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_fixed_counts_and_the_curve():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    curve = pass_at_k_curve(8, 2)
    assert len(curve) == 8 and curve == sorted(curve) and curve[-1] == 1.0
    # the mean over problems, for every k up to the smallest n
    means = mean_pass_at_k([(4, 1), (4, 0), (4, 4)])
    assert list(means) == [1, 2, 3, 4]
    assert means[2] == pytest.approx((0.5 + 0 + 1) / 3)


def test_bad_counts_are_named():
    with pytest.raises(ValueError, match="k=5 must lie in"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=6"):
        pass_at_k(4, 6, 1)
    with pytest.raises(ValueError, match="only 2 samples"):
        mean_pass_at_k([(2, 1), (4, 1)], ks=[3])
