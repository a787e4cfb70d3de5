"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code", the Codex paper, section 2.1).

With n samples of a problem of which c are correct, the probability that at least one of k
samples drawn without replacement from those n is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)

(1 when n - c < k). It is unbiased for the pass@k of the model, unlike 1 - (1 - c/n)^k. The
numerically stable form used here is the paper's: 1 - prod_{i=n-c+1}^{n} (1 - k / i).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct among `n` samples (1 <= k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, n={n}]")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(n: int, c: int) -> list[float]:
    """[pass@1, ..., pass@n] of one problem."""
    return [pass_at_k(n, c, k) for k in range(1, n + 1)]


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Sequence[int] | None = None) -> dict:
    """Mean pass@k over problems given (n, c) per problem, for every k <= min n (or `ks`).

    Problems may have different n (a problem whose generation was capped); k runs up to the
    smallest n so that every problem contributes to every k.
    """
    if not counts:
        raise ValueError("no problems to score")
    n_min = min(n for n, _ in counts)
    ks = list(range(1, n_min + 1)) if ks is None else list(ks)
    bad = [k for k in ks if not 1 <= k <= n_min]
    if bad:
        raise ValueError(f"pass@k asked for k={bad}, but some problem has only {n_min} samples")
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}
