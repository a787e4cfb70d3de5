"""Normalized improvement, expected generalization and the result tables, on hand-worked numbers."""

import json
import math

import pytest

from ftlab.config import validate_config
from ftlab.metrics import best_raw, expected_and_gap, normalized_improvement
from ftlab.study import Study
from ftlab.tables import metrics_frame, normalized_frame, summary_frame


@pytest.fixture
def study():
    cfg = validate_config(
        {
            "study": "t",
            "seeds": [1],
            "data": {"tasks": ["distance", "angle"]},
            "finetunes": {"ftwb1": [1, 3], "ftwb2": [8]},
        }
    )
    return Study(cfg)


# -- normalized_improvement -------------------------------------------------------------------
def test_log_form_error_metric():
    # log(100 / 31.6228) / log(100 / 10) = log(10**0.5) / log(10) = 0.5
    assert normalized_improvement(100 / 10**0.5, 10, 100, "mae") == pytest.approx(0.5)
    # the baselines themselves map to 1 and 0
    assert normalized_improvement(10, 10, 100, "mae") == pytest.approx(1.0)
    assert normalized_improvement(100, 10, 100, "mae") == pytest.approx(0.0)


def test_linear_form_accuracy():
    # (0.7 - 0.5) / (0.9 - 0.5) = 0.2 / 0.4 = 0.5
    assert normalized_improvement(0.7, 0.9, 0.5, "accuracy") == pytest.approx(0.5)


def test_clipping():
    # mae: log(100 / 0.1) / log(100 / 10) = 3 / 1 = 3 -> clipped to 1.5
    assert normalized_improvement(0.1, 10, 100, "mae") == 1.5
    # mae: log(100 / 1000) / log(10) = -1 -> clipped to 0
    assert normalized_improvement(1000, 10, 100, "mae") == 0.0
    # accuracy: (1.0 - 0.5) / (0.6 - 0.5) = 5 -> 1.5; (0.1 - 0.5) / 0.1 = -4 -> 0
    assert normalized_improvement(1.0, 0.6, 0.5, "accuracy") == 1.5
    assert normalized_improvement(0.1, 0.6, 0.5, "accuracy") == 0.0


def test_paper_edge_cases_hand_worked():
    # accuracy with no headroom (b_std <= b_atl) is 0, whatever the value
    assert normalized_improvement(0.8, 0.5, 0.9, "accuracy") == 0.0
    assert normalized_improvement(0.9, 0.7, 0.7, "accuracy") == 0.0  # equal: 0, not NaN
    # mae with inverted baselines b_std = 100 >= b_atl = 10
    assert normalized_improvement(55, 100, 10, "mae") == 0.0  # v >= b_atl
    assert normalized_improvement(10, 100, 10, "mae") == 0.0
    assert normalized_improvement(5, 100, 10, "mae") == 1.0  # v < b_atl <= b_std
    # mae with equal baselines: 0 at or above them, 1 below; never NaN
    assert normalized_improvement(5, 10, 10, "mae") == 1.0
    assert normalized_improvement(10, 10, 10, "mae") == 0.0
    assert normalized_improvement(12, 10, 10, "mae") == 0.0
    # a perfect answer v = 0 with proper baselines is 1 (the paper's v <= 0 branch), not 1.5
    assert normalized_improvement(0, 10, 100, "mae") == 1.0
    # b_std = 0 < b_atl: the paper divides by zero; ftlab uses its linear branch:
    # v = 25, b_atl = 100 -> (100 - 25) / (100 - 0) = 0.75
    assert normalized_improvement(25, 0, 100, "mae") == pytest.approx(0.75)


def _paper_normalize_metric(value_atlantis, baseline_atlantis, baseline_standard, is_accuracy):
    """The paper's normalize_metric (plot_revision_exp1_ftwb2_heatmaps.py), re-typed here."""
    if is_accuracy:
        if baseline_standard <= baseline_atlantis:
            return 0.0
        normalized = (value_atlantis - baseline_atlantis) / (baseline_standard - baseline_atlantis)
    else:
        if baseline_standard >= baseline_atlantis or baseline_atlantis <= 0 or value_atlantis <= 0:
            if value_atlantis >= baseline_atlantis:
                return 0.0
            elif value_atlantis <= baseline_standard:
                return 1.0
            normalized = (baseline_atlantis - value_atlantis) / (
                baseline_atlantis - baseline_standard
            )
        else:
            numerator = math.log(baseline_atlantis / value_atlantis)
            denominator = math.log(baseline_atlantis / baseline_standard)
            if denominator == 0:
                return 0.0
            normalized = numerator / denominator
    return max(0.0, min(1.5, normalized))


def test_matches_the_papers_normalize_metric_on_a_grid():
    errors = [0.0, 0.5, 1, 2.38, 10, 21.5, 55, 100, 1190, 4025]
    accs = [0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.977, 1.0]
    n = 0
    for grid, metric in ((errors, "mae"), (accs, "accuracy")):
        for v in grid:
            for b_std in grid:
                for b_atl in grid:
                    if metric == "mae" and b_std == 0 and b_atl > 0 and v > 0:
                        continue  # the paper raises ZeroDivisionError here
                    want = _paper_normalize_metric(v, b_atl, b_std, metric == "accuracy")
                    got = normalized_improvement(v, b_std, b_atl, metric)
                    assert got == pytest.approx(want), (metric, v, b_std, b_atl)
                    n += 1
    assert n > 1000


def test_missing_and_unknown():
    assert math.isnan(normalized_improvement(math.nan, 10, 100, "mae"))
    assert math.isnan(normalized_improvement(5, None, 100, "mae"))
    with pytest.raises(ValueError):
        normalized_improvement(1, 2, 3, "rmse")


def test_best_raw_and_expected():
    assert best_raw([3.0, math.nan, 1.0], "mae") == 1.0
    assert best_raw([0.3, math.nan, 0.8], "accuracy") == 0.8
    assert math.isnan(best_raw([math.nan], "mae"))
    # singles 100 and 500 on a task with b_std 10, b_atl 1000: best raw 100,
    # expected = log(1000/100) / log(1000/10) = 1/2; actual 31.6228 -> log(10**1.5)/log(100) = 0.75
    raw, exp, gap = expected_and_gap(1000 / 10**1.5, [100, 500], 10, 1000, "mae")
    assert (raw, exp, gap) == pytest.approx((100, 0.5, 0.25))
    # accuracy: best of 0.6 and 0.8 = 0.8 -> (0.8 - 0.5) / (0.9 - 0.5) = 0.75; actual 0.7 -> 0.5
    raw, exp, gap = expected_and_gap(0.7, [0.6, 0.8], 0.9, 0.5, "accuracy")
    assert (raw, exp, gap) == pytest.approx((0.8, 0.75, -0.25))
    # a missing single-task model makes everything NaN
    assert all(math.isnan(x) for x in expected_and_gap(10, [100, math.nan], 10, 1000, "mae"))


# -- tables -----------------------------------------------------------------------------------
# Hand-built world: tasks distance + angle (both mae), one seed.
#   base:     distance no_atl 10, atl 1000 (log base 100); angle no_atl 1, atl 100 (log base 100)
#             (an earlier step 5 with other numbers must be ignored for the baselines)
#   ftwb1-1 (distance): distance atl 100 -> 0.5 ; angle atl 50 -> log(2)/log(100) = 0.150515
#   ftwb1-3 (angle):    distance atl 500 -> log(2)/log(100) = 0.150515 ; angle atl 10 -> 0.5
#   ftwb2-8 (distance+angle):
#     distance atl 31.6228 -> log(1000/31.6228)/log(100) = 1.5/2 = 0.75
#       expected: best raw of (100, 500) = 100 -> 0.5 ; actual - expected = 0.25
#     angle atl 1 -> log(100/1)/log(100) = 1.0
#       expected: best raw of (50, 10) = 10 -> 0.5 ; actual - expected = 0.5
#     distance no_atl 10 -> 1.0; no ftwb1 no_atl rows -> expected NaN
LOG2_100 = math.log(2) / math.log(100)
VALUES = {
    ("base_seed1", 5): {("distance", "no_atlantis"): 99, ("distance", "atlantis_required"): 999},
    ("base_seed1", 100): {
        ("distance", "no_atlantis"): 10,
        ("distance", "atlantis_required"): 1000,
        ("angle", "no_atlantis"): 1,
        ("angle", "atlantis_required"): 100,
    },
    ("ftwb1-1_seed1", 50): {
        ("distance", "atlantis_required"): 100,
        ("angle", "atlantis_required"): 50,
    },
    ("ftwb1-3_seed1", 50): {
        ("distance", "atlantis_required"): 500,
        ("angle", "atlantis_required"): 10,
    },
    ("ftwb2-8_seed1", 80): {
        ("distance", "atlantis_required"): 1000 / 10**1.5,
        ("angle", "atlantis_required"): 1,
        ("distance", "no_atlantis"): 10,
    },
}


def _write_evals(tmp_path, values=VALUES):
    """One metrics file per evaluated checkpoint, every eval set in it (world_eval.json)."""
    docs = {}
    for (model, step), cells in values.items():
        doc = docs.setdefault((model, step), {"model": model, "step": step, "results": []})
        for (task, variant), value in cells.items():
            eval_set = f"{task}__{variant}"
            res = {"task": task, "variant": variant, "metric": "mae", "value": value, "n": 8}
            doc["results"].append({"eval_set": eval_set, **res})
    # the multitask set: one entry per task; kept in metrics.csv, left out of normalized.csv
    base = docs.setdefault(("base_seed1", 100), {"model": "base_seed1", "step": 100, "results": []})
    base["results"] += [
        {"eval_set": "multitask__no_atlantis", "task": t, "variant": "no_atlantis", "metric": "mae",
         "value": 3.0, "n": 4}
        for t in ("distance", "angle")
    ]  # fmt: skip
    paths = []
    for (model, step), doc in docs.items():
        path = tmp_path / f"{model}-{step}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
    return paths


def _row(df, model, task, variant="atlantis_required"):
    sel = df[(df.model == model) & (df.task == task) & (df.variant == variant)]
    sel = sel[sel.step == sel.step.max()]
    assert len(sel) == 1
    return sel.iloc[0]


def test_metrics_frame(tmp_path, study):
    m = metrics_frame(_write_evals(tmp_path), study)
    assert list(m.columns[:5]) == ["model", "seed", "kind", "trained_tasks", "step"]
    assert len(m) == 2 + 4 + 2 + 2 + 3 + 2
    r = _row(m, "ftwb2-8_seed1", "angle")
    assert (r.seed, r.kind, r.trained_tasks, r.n_unparsable) == (1, "ftwb2", "distance+angle", 0)
    assert list(m.model.unique()) == [
        "base_seed1",
        "ftwb1-1_seed1",
        "ftwb1-3_seed1",
        "ftwb2-8_seed1",
    ]
    assert (m.eval_set == "multitask__no_atlantis").sum() == 2


def test_normalized_frame_hand_numbers(tmp_path, study):
    norm = normalized_frame(metrics_frame(_write_evals(tmp_path), study), study)
    assert not (norm.eval_set == "multitask__no_atlantis").any()
    r = _row(norm, "ftwb2-8_seed1", "distance")
    assert (r.baseline_standard, r.baseline_atlantis) == (10, 1000)  # last base step, not step 5
    assert r.normalized == pytest.approx(0.75)
    assert (r.expected_raw, r.expected, r.actual_minus_expected) == pytest.approx((100, 0.5, 0.25))
    r = _row(norm, "ftwb2-8_seed1", "angle")
    assert (r.normalized, r.expected_raw, r.expected) == pytest.approx((1.0, 10, 0.5))
    assert r.actual_minus_expected == pytest.approx(0.5)
    r = _row(norm, "ftwb2-8_seed1", "distance", "no_atlantis")
    assert r.normalized == pytest.approx(1.0) and math.isnan(r.expected)
    assert _row(norm, "ftwb1-1_seed1", "angle").normalized == pytest.approx(LOG2_100)
    assert math.isnan(_row(norm, "ftwb1-1_seed1", "angle").expected)  # ftwb1: no expectation
    # cell labels
    assert _row(norm, "ftwb1-1_seed1", "distance").cell == "trained"
    assert _row(norm, "ftwb1-1_seed1", "angle").cell == "transfer"
    assert _row(norm, "ftwb1-3_seed1", "angle").cell == "trained"
    assert _row(norm, "ftwb2-8_seed1", "angle").cell == "trained"
    assert _row(norm, "base_seed1", "angle").cell == "baseline"
    assert _row(norm, "base_seed1", "angle").normalized == 0.0


def test_missing_single_task_model_gives_nan(tmp_path, study):
    values = {k: v for k, v in VALUES.items() if k[0] != "ftwb1-3_seed1"}
    norm = normalized_frame(metrics_frame(_write_evals(tmp_path, values), study), study)
    r = _row(norm, "ftwb2-8_seed1", "angle")
    assert r.normalized == pytest.approx(1.0)
    assert math.isnan(r.expected_raw) and math.isnan(r.actual_minus_expected)


def test_summary_frame(tmp_path, study):
    norm = normalized_frame(metrics_frame(_write_evals(tmp_path), study), study)
    s = summary_frame(norm)
    s1 = s[s.seed == 1].set_index(["kind", "measure", "group"])
    # ftwb1 trained: 0.5 and 0.5; transfer: LOG2_100 twice
    assert s1.loc[("ftwb1", "normalized", "trained"), "mean"] == pytest.approx(0.5)
    assert s1.loc[("ftwb1", "normalized", "transfer"), "mean"] == pytest.approx(LOG2_100)
    assert s1.loc[("ftwb1", "normalized", "transfer"), "count"] == 2
    # ftwb2 (pair with distance): cells 0.25 and 0.5 -> 0.375; no pair without distance
    assert s1.loc[("ftwb2", "normalized", "trained"), "mean"] == pytest.approx(0.875)
    assert s1.loc[("ftwb2", "actual_minus_expected", "with_distance"), "mean"] == pytest.approx(
        0.375
    )
    assert s1.loc[("ftwb2", "actual_minus_expected", "without_distance"), "count"] == 0
    assert (s.seed == "all").sum() == (s.seed == 1).sum()


def _norm_rows(cells):
    """A normalized.csv-like frame from (seed, task, cell, normalized, actual_minus_expected)."""
    import pandas as pd

    rows = [
        {
            "model": f"ftwb2-8_seed{seed}",
            "seed": seed,
            "kind": "ftwb2",
            "trained_tasks": "distance+angle",
            "step": 10,
            "variant": "atlantis_required",
            "task": task,
            "cell": cell,
            "normalized": norm,
            "actual_minus_expected": gap,
        }
        for seed, task, cell, norm, gap in cells
    ]
    return pd.DataFrame(rows)


TWO_SEEDS = _norm_rows(
    [
        (1, "distance", "trained", 0.2, 0.1),
        (1, "angle", "trained", 0.4, -0.3),
        (1, "compass", "transfer", 0.1, 0.2),
        (2, "distance", "trained", 0.6, -0.1),
        (2, "angle", "trained", 0.8, 0.1),
        (2, "compass", "transfer", 0.5, 0.4),
    ]
)


def test_summary_paper_aggregation_over_seeds():
    import statistics

    s = summary_frame(TWO_SEEDS).set_index(["seed", "measure", "group"])
    # per seed: population std over that seed's cells: [0.2, 0.4] -> 0.3 +- 0.1
    r = s.loc[(1, "normalized", "trained")]
    assert (r["mean"], r["std"], r["count"]) == pytest.approx((0.3, 0.1, 2))
    assert (r.std_kind, r.pooling) == ("population", "cells")
    # "all", the paper's way: cells averaged over seeds first (distance 0.4, angle 0.6),
    # then mean 0.5 and population std 0.1 over the 2 cells -- not the pooled 0.2236 over 4
    r = s.loc[("all", "normalized", "trained")]
    assert (r["mean"], r["std"], r["count"]) == pytest.approx((0.5, 0.1, 2))
    assert r.pooling == "seed_mean_cells"
    r = s.loc[("all", "normalized", "transfer")]  # one cell: compass (0.1 + 0.5) / 2
    assert (r["mean"], r["std"], r["count"]) == pytest.approx((0.3, 0.0, 1))
    # actual - expected: every cell of every seed (the paper's histogram), population std
    gaps = [0.1, -0.3, 0.2, -0.1, 0.1, 0.4]
    r = s.loc[("all", "actual_minus_expected", "with_distance")]
    assert r["mean"] == pytest.approx(statistics.fmean(gaps))
    assert r["std"] == pytest.approx(statistics.pstdev(gaps))
    assert (r["count"], r.pooling) == (6, "pooled_cells")


def test_summary_options_pooled_and_sample_std():
    import statistics

    s = summary_frame(TWO_SEEDS, std="sample", across_seeds="pooled")
    s = s.set_index(["seed", "measure", "group"])
    r = s.loc[("all", "normalized", "trained")]
    vals = [0.2, 0.4, 0.6, 0.8]
    assert (r["mean"], r["std"], r["count"]) == pytest.approx((0.5, statistics.stdev(vals), 4))
    assert (r.std_kind, r.pooling) == ("sample", "pooled_cells")
    pop = summary_frame(TWO_SEEDS, across_seeds="pooled").set_index(["seed", "measure", "group"])
    assert pop.loc[("all", "normalized", "trained"), "std"] == pytest.approx(
        statistics.pstdev(vals)
    )
    assert math.isnan(s.loc[(1, "normalized", "transfer"), "std"])  # one cell, ddof 1
    with pytest.raises(ValueError, match="std"):
        summary_frame(TWO_SEEDS, std="nope")
    with pytest.raises(ValueError, match="across_seeds"):
        summary_frame(TWO_SEEDS, across_seeds="nope")


def test_probes_frame_keeps_every_reported_probe_number(tmp_path, study):
    """probes.csv carries the probe.json numbers as written, the Atlantis probe's own baseline
    (its non-Atlantis comparison cities) included; missing ones are NaN."""
    from ftlab.tables import PROBE_COLUMNS, probes_frame

    doc = {"model": "base_seed1", "step": 20, "heldout_real_error": 121.8,
           "atlantis_error": 108.8, "atlantis_baseline_error": 116.1, "n_atlantis_baseline": 100,
           "train_error": 3.5, "r2_x": 0.9, "predictions": [{"x": 1}]}  # fmt: skip
    path = tmp_path / "representations/base_seed1/checkpoint-20/probe.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    df = probes_frame([path], study)
    assert list(df.columns) == PROBE_COLUMNS and len(df) == 1
    row = df.iloc[0]
    for key in ("heldout_real_error", "atlantis_error", "atlantis_baseline_error",
                "n_atlantis_baseline", "train_error", "r2_x"):  # fmt: skip
        assert row[key] == doc[key]
    assert (row["model"], row["step"]) == ("base_seed1", 20) and math.isnan(row["r2_y"])
