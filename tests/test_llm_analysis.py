"""Forgetting tables on hand-worked numbers, and the LLM study matrix."""

import json

import numpy as np
import pandas as pd
import pytest

from ftlab.config import validate_config
from ftlab.llm import analysis
from ftlab.llm.study import LLMStudy


def _study(**llm):
    cfg = {
        "kind": "llm",
        "study": "t",
        "seeds": [1],
        "llm": {
            "datasets": {"gsm8k": {"format": "gsm8k", "train": "a", "test": "b"}},
            "methods": ["gt_sft", "grpo"],
            "sft": {"max_steps": 300, "save_steps": 100},
            "grpo": {"max_steps": 250, "save_steps": 100},
            **llm,
        },
    }
    return LLMStudy(validate_config(cfg))


def runs(study):
    """What the tables rule passes: {run: {method, dataset, seed}}."""
    return {
        n: {"method": r.method, "dataset": r.dataset, "seed": r.seed} for n, r in study.runs.items()
    }


def test_matrix_and_checkpoint_grid():
    study = _study()
    assert list(study.runs) == ["gt_sft-gsm8k_seed1", "grpo-gsm8k_seed1"]
    assert study.run("gt_sft-gsm8k_seed1").saved_steps == (100, 200, 300)
    assert study.run("grpo-gsm8k_seed1").saved_steps == (100, 200, 250)  # the end is saved
    assert study.eval_points()[0] == ("base", 0)
    assert len(study.eval_points()) == 1 + 3 + 3
    assert len(_study(checkpoints="last").eval_points()) == 1 + 1 + 1


def _write(tmp_path, model, step, scores):
    path = tmp_path / f"{model}-{step}.json"
    benches = [{"task": t, "metric": "acc", "value": v, "n": 10} for t, v in scores.items()]
    path.write_text(json.dumps({"model": model, "step": step, "benchmarks": benches}))
    return path


def test_forgetting_is_score_minus_base(tmp_path):
    study = _study()
    paths = [
        _write(tmp_path, "base", 0, {"arc_easy": 0.60, "boolq": 0.70}),
        _write(tmp_path, "gt_sft-gsm8k_seed1", 100, {"arc_easy": 0.62, "boolq": 0.65}),
        _write(tmp_path, "gt_sft-gsm8k_seed1", 300, {"arc_easy": 0.55, "boolq": 0.71}),
    ]
    forgetting = analysis.forgetting_frame(analysis.benchmark_frame(paths, runs(study)))
    f = forgetting.set_index(["model", "step", "benchmark"])["forgetting"]
    # 0.62 - 0.60 = +0.02; 0.65 - 0.70 = -0.05; 0.55 - 0.60 = -0.05; 0.71 - 0.70 = +0.01
    assert f[("gt_sft-gsm8k_seed1", 100, "arc_easy")] == pytest.approx(0.02)
    assert f[("gt_sft-gsm8k_seed1", 100, "boolq")] == pytest.approx(-0.05)
    assert f[("gt_sft-gsm8k_seed1", 300, "arc_easy")] == pytest.approx(-0.05)
    # the base model is each run's step-0 point, with zero forgetting
    assert f[("gt_sft-gsm8k_seed1", 0, "boolq")] == 0
    summary = analysis.summary_frame(forgetting).iloc[0]
    # last step (300): mean(-0.05, +0.01) = -0.02, worst = arc_easy at -0.05
    assert summary.step == 300
    assert summary.avg_forgetting == pytest.approx(-0.02)
    assert (summary.worst_benchmark, summary.worst_forgetting) == ("arc_easy", pytest.approx(-0.05))


def test_forgetting_needs_the_base_model(tmp_path):
    study = _study()
    paths = [_write(tmp_path, "gt_sft-gsm8k_seed1", 100, {"arc_easy": 0.5})]
    with pytest.raises(ValueError, match="base model"):
        analysis.forgetting_frame(analysis.benchmark_frame(paths, runs(study)))


def test_in_domain_table_and_plots(tmp_path):
    study = _study()
    paths = []
    for model, step, acc in [("base", 0, 0.1), ("gt_sft-gsm8k_seed1", 100, 0.3)]:
        p = tmp_path / f"{model}.json"
        res = {"accuracy": acc, "partial_accuracy": acc + 0.1, "format_accuracy": 0.5, "n": 8}
        p.write_text(json.dumps({"model": model, "step": step, "datasets": {"gsm8k": res}}))
        paths.append(p)
    table = analysis.in_domain_frame(paths, runs(study))
    assert list(table.accuracy) == [0.1, 0.3]
    assert np.isnan(table.seed.iloc[0]) and table.seed.iloc[1] == 1
    out = tmp_path / "in_domain_gsm8k.png"
    analysis.plot_in_domain(table, "gsm8k", out)
    assert out.stat().st_size > 1000


def test_llm_config_errors_name_the_key():
    from ftlab.config import ConfigError

    with pytest.raises(ConfigError, match="llm.datasets"):
        validate_config({"kind": "llm", "study": "t"})
    with pytest.raises(ConfigError, match="llm.datasets.gsm8k.test"):
        validate_config(
            {
                "kind": "llm",
                "study": "t",
                "llm": {"datasets": {"gsm8k": {"format": "gsm8k", "train": "x"}}},
            }
        )
    with pytest.raises(ConfigError, match="llm.methods"):
        validate_config({"kind": "llm", "study": "t", "llm": {"methods": ["dpo"]}})


def _grpo_runs(seeds=(1, 2, 3)):
    return {f"grpo-gsm8k_seed{s}": {"method": "grpo", "dataset": "gsm8k", "seed": s} for s in seeds}


SEED_SCORES = {1: (0.58, 0.69), 2: (0.61, 0.62), 3: (0.52, 0.72)}  # (arc_easy, boolq)


def _three_seeds(tmp_path):
    paths = [_write(tmp_path, "base", 0, {"arc_easy": 0.60, "boolq": 0.70})]
    for s, (a, b) in SEED_SCORES.items():
        paths.append(_write(tmp_path, f"grpo-gsm8k_seed{s}", 200, {"arc_easy": a, "boolq": b}))
    return analysis.forgetting_frame(analysis.benchmark_frame(paths, _grpo_runs()))


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_seed_all_row_is_students_t_over_seeds(tmp_path, confidence):
    from scipy import stats as sps

    summary = analysis.summary_frame(_three_seeds(tmp_path), confidence=confidence)
    row = summary[summary.seed.astype(str) == "all"].iloc[0]
    # each seed's mean forgetting over the two benchmarks, by hand
    per_seed = [np.mean([a - 0.60, b - 0.70]) for a, b in SEED_SCORES.values()]
    lo, hi = sps.t.interval(confidence, 2, loc=np.mean(per_seed), scale=sps.sem(per_seed))
    assert row.n_seeds == 3 and row.avg_forgetting == pytest.approx(np.mean(per_seed))
    assert (row.ci_low, row.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert bool(row.significant) is bool(lo > 0 or hi < 0)
    assert row.n_benchmarks == 2 and row.dropped_benchmarks == ""


def test_benchmark_without_base_score_is_dropped_and_named(tmp_path, caplog):
    paths = [
        _write(tmp_path, "base", 0, {"arc_easy": 0.6}),
        _write(tmp_path, "grpo-gsm8k_seed1", 200, {"arc_easy": 0.5, "boolq": 0.9}),
    ]
    runs = _grpo_runs((1,))
    forgetting = analysis.forgetting_frame(analysis.benchmark_frame(paths, runs))
    with caplog.at_level("WARNING"):
        summary = analysis.summary_frame(forgetting)
    run = summary.iloc[0]
    assert run.n_benchmarks == 1 and run.avg_forgetting == pytest.approx(-0.1)
    assert run.dropped_benchmarks == "boolq" and run.worst_benchmark == "arc_easy"
    assert summary.iloc[1].dropped_benchmarks == "boolq"  # the seed "all" row too
    assert "no base-model score for boolq" in caplog.text


def test_plots_use_the_configured_confidence(tmp_path, monkeypatch):
    from scipy import stats as sps

    forgetting = _three_seeds(tmp_path)
    arc = forgetting[forgetting.benchmark == "arc_easy"]
    curve = analysis._curve(arc, 0.9).set_index("step")
    diffs = [a - 0.60 for a, _ in SEED_SCORES.values()]
    lo, hi = sps.t.interval(0.9, 2, loc=np.mean(diffs), scale=sps.sem(diffs))
    assert (curve.low[200], curve.high[200]) == (pytest.approx(lo), pytest.approx(hi))
    assert bool(curve.significant[200]) is bool(lo > 0 or hi < 0)
    wide = analysis._curve(arc, 0.95).set_index("step")
    assert wide.low[200] < curve.low[200] < curve.high[200] < wide.high[200]
    titles = []
    monkeypatch.setattr(analysis, "_save", lambda fig, out: titles.append(
        (fig._suptitle.get_text() if fig._suptitle else "")
        + " ".join(ax.get_title() for ax in fig.axes)))  # fmt: skip
    analysis.plot_forgetting(forgetting, "gsm8k", tmp_path / "f.png", confidence=0.9)
    analysis.plot_summary(analysis.summary_frame(forgetting, confidence=0.9),
                          tmp_path / "s.png", confidence=0.9)  # fmt: skip
    assert all("90% interval" in t and "95%" not in t for t in titles) and len(titles) == 2


def test_single_seed_curve_takes_significance_from_the_test(tmp_path):
    """One seed: the curve's filled markers follow the comparison's test (exact McNemar), not
    the bootstrap interval, which can exclude 0 when the test does not reject."""
    forgetting = analysis.forgetting_frame(analysis.benchmark_frame(
        [_write(tmp_path, "base", 0, {"boolq": 0.7}),
         _write(tmp_path, "grpo-gsm8k_seed1", 200, {"boolq": 0.6987})],
        _grpo_runs((1,))))  # fmt: skip
    comp = pd.DataFrame([{"model": "grpo-gsm8k_seed1", "step": 200, "benchmark": "boolq",
                          "ci_low": -0.0027, "ci_high": -0.0003, "p_value": 0.125,
                          "significant": False, "test": "exact McNemar"}])  # fmt: skip
    forgetting = forgetting.drop(columns=analysis.CI_COLUMNS).merge(
        comp, on=["model", "step", "benchmark"], how="left"
    )
    curve = analysis._curve(forgetting, 0.95).set_index("step")
    assert curve.high[200] < 0 and not curve.significant[200]
