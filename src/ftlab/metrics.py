"""Pure formulas of the study's metrics (design doc, "Metrics"): normalized improvement,
the best raw value of a set of models, and the expected generalization of a two-task model.

No I/O and no pandas: tables.py applies these row by row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ERROR_METRICS = ("mae",)  # lower is better
SCORE_METRICS = ("accuracy",)  # higher is better
CLIP_LOW, CLIP_HIGH = 0.0, 1.5


def _check_metric(metric: str) -> None:
    if metric not in ERROR_METRICS + SCORE_METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; expected one of {ERROR_METRICS + SCORE_METRICS}"
        )


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def normalized_improvement(
    value: float, baseline_standard: float, baseline_atlantis: float, metric: str
) -> float:
    """Normalized improvement of `value`: 0 = the Atlantis baseline, 1 = the standard baseline.

    Exactly the paper's ``normalize_metric`` (scripts/plot_revision_exp1_ftwb2_heatmaps.py),
    with v = value, b_std = baseline_standard, b_atl = baseline_atlantis:

    - accuracy ("accuracy", higher is better): 0 if b_std <= b_atl (no headroom, equal
      baselines included); else (v - b_atl) / (b_std - b_atl).
    - error metrics ("mae", lower is better), normal case (b_std < b_atl, b_atl > 0, v > 0):
      log(b_atl / v) / log(b_atl / b_std). Log because errors shrink multiplicatively.
    - error metric otherwise (b_std >= b_atl, i.e. inverted or equal baselines; b_atl <= 0;
      or v <= 0, e.g. a perfect answer v = 0): 0 if v >= b_atl, else 1 if v <= b_std, else the
      linear form (b_atl - v) / (b_atl - b_std). So v = 0 gives 1, never the upper clip.
    - error metric with b_std <= 0 < b_atl and v > 0 (a perfect standard baseline): the paper
      divides by zero here; ftlab takes the linear branch above (documented deviation).
    - any input NaN/None: NaN (a missing measurement).

    The result is clipped to [0, 1.5] (NaN stays NaN).
    """
    _check_metric(metric)
    v, b_std, b_atl = value, baseline_standard, baseline_atlantis
    if _nan(v) or _nan(b_std) or _nan(b_atl):
        return math.nan
    v, b_std, b_atl = float(v), float(b_std), float(b_atl)
    if metric in SCORE_METRICS:
        if b_std <= b_atl:
            return 0.0
        raw = (v - b_atl) / (b_std - b_atl)
    elif b_std >= b_atl or b_atl <= 0 or v <= 0 or b_std <= 0:
        if v >= b_atl:
            return 0.0
        if v <= b_std:
            return 1.0
        raw = (b_atl - v) / (b_atl - b_std)
    else:
        raw = math.log(b_atl / v) / math.log(b_atl / b_std)
    return min(CLIP_HIGH, max(CLIP_LOW, raw))


def best_raw(values: Iterable[float], metric: str) -> float:
    """The best raw value: min for error metrics, max for accuracy; NaNs ignored
    (NaN when nothing is left)."""
    _check_metric(metric)
    vals = [float(v) for v in values if not _nan(v)]
    if not vals:
        return math.nan
    return min(vals) if metric in ERROR_METRICS else max(vals)


def expected_and_gap(
    actual_value: float,
    single_task_values: Iterable[float],
    baseline_standard: float,
    baseline_atlantis: float,
    metric: str,
) -> tuple[float, float, float]:
    """Expected generalization of a two-task model on one task, and its gap.

    `single_task_values` are the RAW values on the same eval set of the single-task (ftwb1)
    models for each of the two-task model's trained tasks (same seed). The expected value is
    the best of them, normalized; actual - expected = normalized(actual_value) - expected.
    Returns (expected_raw, expected, actual_minus_expected). Every single-task value must be
    present: one NaN/None (a missing ftwb1 model) makes all three NaN, since the best of an
    incomplete set would silently understate the expectation.
    """
    singles = list(single_task_values)
    if not singles or any(_nan(v) for v in singles):
        return math.nan, math.nan, math.nan
    raw = best_raw(singles, metric)
    expected = normalized_improvement(raw, baseline_standard, baseline_atlantis, metric)
    actual = normalized_improvement(actual_value, baseline_standard, baseline_atlantis, metric)
    return raw, expected, actual - expected
