"""Paired significance tests on per-sample outcomes of two models (the same test items).

All take the per-item values of A and B in matching order (``a[i]`` and ``b[i]`` are the
same item) and test whether the mean difference is zero:

- ``paired_bootstrap``: resample items with replacement (within strata, e.g. seeds, so every
  seed keeps its weight); percentile CI of mean(a - b) and the two-sided bootstrap p-value
  2 * (1 + min(#{d* <= 0}, #{d* >= 0})) / (1 + resamples): a Monte Carlo p-value is never 0.
  Below ``MIN_BOOTSTRAP_N`` items the resamples of so few values understate the spread (one
  item: every resample is the same), so the result carries a note. Whether it may still be
  called significant is the option ``min_items``: a result on fewer items is flagged
  ``decidable=False`` (never significant). ``paired_bootstrap`` and ``run_test("bootstrap")``
  default to 0, seed 001's plain bootstrap (its p decides at any size); ``run_test("auto")``
  (ours) to ``MIN_BOOTSTRAP_N``.
- ``paired_permutation``: sign-flip test of mean(a - b) (under H0 the two labels of an item are
  exchangeable). Exact (all 2^k flips of the k non-zero differences) when k <= ``EXACT_MAX``,
  otherwise Monte Carlo with p = (1 + hits) / (1 + resamples).
- ``mcnemar``: binary outcomes only; discordant counts n10 (A right, B wrong) and n01. Exact
  binomial test when n10 + n01 < 25, else the chi-square test with continuity correction.
- ``auto`` (the default of ``run_test`` and ``ftlab significance``): 0/1 outcomes are decided
  by the exact McNemar test (the exact sign-flip test of binary differences: a binomial test
  on the discordant pairs, valid however few there are), with the bootstrap's interval; any
  other outcomes by the bootstrap. The bootstrap's p-value is anti-conservative with few
  discordant pairs (4 losses and no gain in 3000 items: bootstrap p ~ 0.04, exact p = 0.125).

Each result says which test gave p (``p_from``) and which method gave the interval
(``ci_from``).

Checked against ``scipy.stats.permutation_test``, ``scipy.stats.bootstrap``,
``scipy.stats.binomtest`` and a closed-form binomial sum in tests/test_registry.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

EXACT_MAX = 20  # 2^20 sign patterns: exact enumeration still takes well under a second
METHODS = ("auto", "bootstrap", "permutation", "mcnemar")
# Fewer paired items than this: the bootstrap's p-value is unreliable (at n = 1 every resample
# is the same item; below ~20 the percentile bootstrap's spread is too small): always a note,
# and no decision where min_items asks for it (auto's default). The exact sign-flip test
# (--method permutation) is exact at any n.
MIN_BOOTSTRAP_N = 20


@dataclass(frozen=True)
class TestResult:
    method: str
    n: int  # paired items
    mean_a: float
    mean_b: float
    diff: float  # mean(a - b)
    p_value: float
    ci_low: float | None = None
    ci_high: float | None = None
    detail: str = ""
    p_from: str = ""  # the test that gave p_value
    ci_from: str = ""  # the method that gave the interval ("" without one)
    confidence: float | None = None  # level of the interval
    note: str = ""  # a caveat the reader must see
    decidable: bool = True  # False: never called significant (see note)

    def as_dict(self) -> dict:
        return asdict(self)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired tests need two equal-length 1-D arrays, got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError("no paired items to test")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-sample values contain NaN or infinity")
    return a, b


def paired_permutation(a, b, n_resamples: int = 10000, seed: int = 0) -> TestResult:
    a, b = _pair(a, b)
    d = a - b
    observed = d.mean()
    nz = d[d != 0]  # a zero difference is the same under either sign
    k, n = nz.size, d.size
    # Compare sums with a relative tolerance: float noise must not decide ties.
    obs_sum = abs(nz.sum())
    tol = 1e-9 * max(1.0, float(np.abs(nz).sum()))
    if k == 0:
        p, detail = 1.0, "all differences are zero"
    elif k <= EXACT_MAX:
        signs = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1) * 2 - 1
        sums = np.abs(signs @ nz)
        p = float(np.mean(sums >= obs_sum - tol))
        detail = f"exact over 2^{k} sign flips"
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_resamples, 1000):
            m = min(1000, n_resamples - start)
            signs = rng.integers(0, 2, size=(m, k)) * 2 - 1
            hits += int(np.sum(np.abs(signs @ nz) >= obs_sum - tol))
        p = (1 + hits) / (1 + n_resamples)
        detail = f"Monte Carlo, {n_resamples} sign flips"
    return TestResult(
        "permutation", n, a.mean(), b.mean(), observed, p, detail=detail,
        p_from=f"sign-flip permutation test ({detail})",
    )  # fmt: skip


def _check(n_resamples: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise ValueError(f"resamples must be an integer, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def paired_bootstrap(
    a, b, n_resamples: int = 10000, seed: int = 0, strata=None, confidence: float = 0.95,
    min_items: int = 0,
) -> TestResult:  # fmt: skip
    """min_items: fewer paired items than this are never called significant (0: p decides at
    any size, as seed 001's bootstrap)."""
    _check(n_resamples, confidence)
    a, b = _pair(a, b)
    d = a - b
    rng = np.random.default_rng(seed)
    groups = [np.arange(d.size)] if strata is None else _strata(strata, d.size)
    means = np.zeros(n_resamples)
    for idx in groups:
        # Each stratum is resampled on its own and keeps its share of the items; chunks of
        # resamples keep the index matrix at a few million entries for large test sets.
        chunk = max(1, 4_000_000 // idx.size)
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            picks = rng.integers(0, idx.size, size=(stop - start, idx.size))
            means[start:stop] += d[idx][picks].sum(axis=1)
    means /= d.size
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    # (1 + count) / (1 + resamples) per tail: the observed data count as one resample, so a
    # Monte Carlo p-value is never 0 (constant differences put every resample on one side).
    tail = min(int(np.sum(means <= 0)), int(np.sum(means >= 0)))
    p = min(1.0, 2 * (1 + tail) / (1 + n_resamples))
    if np.all(d == 0):
        p = 1.0
    detail = f"{n_resamples} resamples" + (f", {len(groups)} strata" if strata is not None else "")
    note, decidable = "", True
    if d.size < min_items:
        note = (
            f"only {d.size} paired items: fewer than --min-bootstrap-items {min_items}, so this "
            "is not called significant (use --method permutation: exact at any size)"
        )
        decidable = False
    elif d.size < MIN_BOOTSTRAP_N:
        note = (
            f"only {d.size} paired items: a bootstrap p-value on fewer than {MIN_BOOTSTRAP_N} "
            "understates the spread (--method permutation is exact at any size; "
            f"--min-bootstrap-items {MIN_BOOTSTRAP_N} refuses to decide)"
        )
    return TestResult(
        "bootstrap", d.size, a.mean(), b.mean(), d.mean(), float(p), float(lo), float(hi),
        detail, p_from=f"paired bootstrap ({detail})",
        ci_from=f"paired percentile bootstrap ({detail})", confidence=confidence, note=note,
        decidable=decidable,
    )  # fmt: skip


def _strata(strata, n: int) -> list[np.ndarray]:
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata must have one label per item ({n}), got shape {strata.shape}")
    return [np.flatnonzero(strata == s) for s in np.unique(strata)]


def mcnemar(a, b, exact: bool | None = None) -> TestResult:
    a, b = _pair(a, b)
    for name, x in (("A", a), ("B", b)):
        bad = {float(v) for v in np.unique(x)} - {0.0, 1.0}  # floats: printed as 0.5
        if bad:
            raise ValueError(
                f"McNemar's test needs 0/1 outcomes; {name} has values {sorted(bad)[:5]} "
                "(use --method auto, bootstrap or permutation for graded metrics)"
            )
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    discordant = n10 + n01
    exact = discordant < 25 if exact is None else exact
    if discordant == 0:
        p, detail = 1.0, "no discordant pairs"
    elif exact:
        from scipy.stats import binomtest

        p = binomtest(min(n10, n01), discordant, 0.5).pvalue
        detail = f"exact binomial, n10={n10} n01={n01}"
    else:
        from scipy.stats import chi2

        stat = (abs(n10 - n01) - 1) ** 2 / discordant
        p = chi2.sf(stat, 1)
        detail = f"chi2={stat:.4g} (continuity corrected), n10={n10} n01={n01}"
    name = "exact McNemar" if exact or discordant == 0 else "McNemar chi-square"
    return TestResult(
        "mcnemar", a.size, a.mean(), b.mean(), (a - b).mean(), float(min(1.0, p)), detail=detail,
        p_from=f"{name} ({detail})",
    )  # fmt: skip


def is_binary(a, b) -> bool:
    """Both outcome arrays hold only 0 and 1."""
    return bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())


def run_test(
    method: str, a, b, *, n_resamples: int = 10000, seed: int = 0, strata=None,
    confidence: float = 0.95, min_bootstrap_items: int | None = None,
) -> TestResult:  # fmt: skip
    """`method`: auto (0/1 outcomes: exact McNemar p with the bootstrap's interval; otherwise the
    bootstrap), bootstrap, permutation or mcnemar. `confidence`: level of the interval.
    `min_bootstrap_items`: a bootstrap-decided result on fewer items is never significant;
    None: MIN_BOOTSTRAP_N under auto, 0 under bootstrap (seed 001's plain bootstrap)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    _check(n_resamples, confidence)
    min_items = default_min_bootstrap_items(method, min_bootstrap_items)
    a, b = _pair(a, b)
    if method == "permutation":
        return paired_permutation(a, b, n_resamples, seed)
    if method == "mcnemar":
        return mcnemar(a, b)
    boot = paired_bootstrap(a, b, n_resamples, seed, strata, confidence, min_items)
    if not is_binary(a, b):
        return replace(boot, method=method)
    exact = mcnemar(a, b, exact=True)
    if method == "auto":
        # The exact test is valid at any size: the bootstrap's small-n flag does not apply.
        return replace(
            exact, method="auto", ci_low=boot.ci_low, ci_high=boot.ci_high,
            ci_from=boot.ci_from, confidence=confidence,
        )  # fmt: skip
    # An explicit bootstrap on 0/1 outcomes keeps its own p, and says what the exact test says.
    caveat = (
        f"0/1 outcomes: the bootstrap p-value is anti-conservative with few discordant pairs; "
        f"exact McNemar p = {exact.p_value:.4g} ({exact.detail}; --method auto decides by it)"
    )
    return replace(boot, note="; ".join(x for x in (boot.note, caveat) if x))


def default_min_bootstrap_items(method: str, given: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 0:
            raise ValueError(f"min_bootstrap_items must be a whole number >= 0, got {given!r}")
        return int(given)
    return MIN_BOOTSTRAP_N if method == "auto" else 0


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, None
    if len(vals) == 1:
        return vals[0], None
    return float(np.mean(vals)), float(np.std(vals, ddof=1))
