"""Forgetting tables on hand-worked numbers, and the LLM study matrix."""

import json

import numpy as np
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
