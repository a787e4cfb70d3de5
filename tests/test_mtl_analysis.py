"""The multi-task analysis on hand-made runs: overfitting per seed, the compared checkpoint,
and bad inputs named."""

import itertools

import numpy as np
import pandas as pd
import pytest

from ftlab.io import write_jsonl
from ftlab.mtl import analysis
from ftlab.mtl.early_stopping import kept_checkpoints


def curve_rows(model, method, seed, epochs, rewards, domain="math"):
    pairs = zip(epochs, rewards, strict=True)
    return [{"model": model, "method": method, "seed": seed, "step": e * 10, "epoch": e,
             "domain": domain, "reward": r} for e, r in pairs]  # fmt: skip


def auditor_scenario():
    """Seed 1 rises 0.80 -> 0.82 and stops at epoch 15; seed 2 rises 0.405 -> 0.43 through 30."""
    e1, e2 = list(range(0, 16, 3)), list(range(0, 31, 3))
    r1 = np.linspace(0.80, 0.82, len(e1))
    r2 = np.linspace(0.405, 0.43, len(e2))
    return curve_rows("p1", "pcgrad", 1, e1, r1) + curve_rows("p2", "pcgrad", 2, e2, r2)


def test_seeds_stopping_at_different_epochs_are_not_flagged():
    evo = pd.DataFrame(auditor_scenario())
    # the seed-mean curve (the former rule) drops from ~0.61 to ~0.42 after epoch 15:
    mean = evo.groupby("epoch")["reward"].mean()
    assert mean.idxmax() == 15 and (mean[mean.index > 15] < mean.max() - 0.01).all()
    per_run = analysis.overfitting_runs(evo, drop=0.01, min_after=2)
    got = per_run[["seed", "peak_epoch", "overfit"]].values.tolist()
    assert got == [[1, 15, False], [2, 30, False]]
    summary = analysis.overfitting(evo, drop=0.01, min_after=2).iloc[0]
    assert (summary["n_seeds"], summary["n_overfit"], summary["overfit"]) == (2, 0, False)


def test_a_seed_that_declines_is_flagged_and_counted():
    rows = auditor_scenario()
    e3 = list(range(0, 31, 3))
    r3 = [0.5, 0.6, 0.7, 0.8, 0.7, 0.69, 0.68, 0.66, 0.65, 0.64, 0.6]  # peak at 9, then down
    evo = pd.DataFrame(rows + curve_rows("p3", "pcgrad", 3, e3, r3))
    per_run = analysis.overfitting_runs(evo, drop=0.01, min_after=2)
    assert per_run.set_index("seed")["overfit"].to_dict() == {1: False, 2: False, 3: True}
    assert per_run.set_index("seed").loc[3, "peak_epoch"] == 9
    summary = analysis.overfitting(evo, drop=0.01, min_after=2).iloc[0]
    assert (summary["n_overfit"], summary["overfit_seeds"], summary["overfit"]) == (1, "3", True)
    # a dip that recovers within the drop is not a sustained decline
    r4 = [0.5, 0.6, 0.7, 0.8, 0.7, 0.795, 0.7, 0.7, 0.7, 0.7, 0.7]
    evo4 = pd.DataFrame(curve_rows("p4", "pcgrad", 4, e3, r4))
    assert not analysis.overfitting_runs(evo4, drop=0.01, min_after=2)["overfit"].any()


def manifest(epochs, values, spe=10):
    kept, selected = kept_checkpoints(epochs, dict(zip(epochs, values, strict=True)), 10, "max")
    return {"checkpoints": [{"step": e * spe, "epoch": e, "validation": values[epochs.index(e)],
                             "selected": e == selected} for e in kept],
            "selected": {"step": selected * spe, "epoch": selected}}  # fmt: skip


def test_the_compared_checkpoint_is_the_last_by_default():
    mans = {"a": manifest([5, 10, 15], [0.3, 0.5, 0.4]), "b": manifest([5, 10], [0.2, 0.1])}
    assert analysis.compared_steps(mans) == {"a": 150, "b": 100}
    assert analysis.compared_steps(mans, "selected") == {"a": 100, "b": 50}
    with pytest.raises(ValueError, match="mtl.report.checkpoint"):
        analysis.compared_steps(mans, "best")


def test_pruning_always_keeps_the_last_checkpoint():
    rng = np.random.default_rng(0)
    for n, keep in itertools.product(range(1, 9), range(1, 5)):
        saved = sorted(rng.choice(np.arange(1, 40), n, replace=False).tolist())
        values = {e: float(rng.random()) for e in saved}
        kept, selected = kept_checkpoints(saved, values, keep, "max")
        assert saved[-1] in kept and selected in kept


def write_samples(root, model, step, per_task):
    path = root / model / f"checkpoint-{step}" / "mtl_eval.samples.jsonl"
    write_jsonl(path, [{"task": t, "sample": i, "reward": r} for t, rs in per_task.items()
                       for i, r in enumerate(rs)])  # fmt: skip
    return str(path)


def test_comparison_uses_the_chosen_checkpoint_and_names_missing_samples(tmp_path):
    mans = {"base_s1": manifest([5, 10], [0.5, 0.1]), "pc_s1": manifest([5, 10], [0.5, 0.1])}
    runs = {"base_s1": {"method": "baseline", "seed": 1}, "pc_s1": {"method": "pcgrad", "seed": 1}}
    domains = {"math": ["t1"]}
    paths = [
        write_samples(tmp_path, "base_s1", 50, {"t1": [0, 0, 0, 0]}),
        write_samples(tmp_path, "pc_s1", 50, {"t1": [1, 1, 1, 1]}),  # selected: +1
        write_samples(tmp_path, "base_s1", 100, {"t1": [0, 1, 0, 1]}),
        write_samples(tmp_path, "pc_s1", 100, {"t1": [0, 0, 0, 1]}),  # last: -0.25
    ]
    kw = {"confidence": 0.95, "n_resamples": 200, "seed": 0}
    last = analysis.comparison_frame(paths, mans, runs, domains, **kw)
    assert last.set_index("level").loc["all", "diff"] == pytest.approx(-0.25)
    sel = analysis.comparison_frame(paths, mans, runs, domains, checkpoint="selected", **kw)
    assert sel.set_index("level").loc["all", "diff"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"base_s1/checkpoint-100/mtl_eval.samples.jsonl: no "
                                         r"samples of task 't2'"):  # fmt: skip
        analysis.comparison_frame(paths, mans, runs, {"math": ["t1", "t2"]}, **kw)
    with pytest.raises(ValueError, match=r"no evaluation samples of the last checkpoint of "
                                         r"\['pc_s1'\] \(steps \[100\]\)"):  # fmt: skip
        analysis.comparison_frame(paths[:3], mans, runs, domains, **kw)


def lm_eval_rows():
    result = {"benchmarks": [{"task": "b1", "metric": "acc", "value": 0.5}]}
    rows = [{"benchmark": "b1", "task": "b1", "doc_id": i, "filter": "none",
             "metrics": {"acc": float(i % 2)}, "response": "x"} for i in range(4)]  # fmt: skip
    return result, rows


def test_lm_eval_outcomes_name_a_metric_or_filter_without_samples():
    from ftlab.mtl.evaluate import lm_eval_outcomes

    result, rows = lm_eval_rows()
    tasks, samples = lm_eval_outcomes(result, rows, {"b1": "math"}, {"b1": "acc"}, source="raw")
    assert tasks[0]["n"] == 4 and tasks[0]["reward"] == 0.5 and len(samples) == 4
    msg = (
        r"raw: no sample rows of task 'b1' with filter 'strict' \(mtl.eval.metrics.b1: "
        r"'acc,strict'; filters present for the task: \['none'\]\)"
    )
    with pytest.raises(ValueError, match=msg):
        lm_eval_outcomes(result, rows, {"b1": "math"}, {"b1": "acc,strict"}, source="raw")
    with pytest.raises(ValueError, match=r"raw: task 'b1' samples have no metric 'exact_match' "
                                         r"\(mtl.eval.metrics.b1"):  # fmt: skip
        lm_eval_outcomes(result, rows, {"b1": "math"}, {"b1": "exact_match"}, source="raw")
    with pytest.raises(ValueError, match=r"raw: lm-eval returned no result for task 'b2'"):
        lm_eval_outcomes(result, rows, {"b2": "math"}, {"b2": "acc"}, source="raw")


def test_the_report_states_the_number_of_comparisons_and_no_correction():
    from ftlab.mtl import report

    comparison = pd.DataFrame([{"method": "pcgrad", "level": lvl, "name": n, "domain": "math",
                                "baseline_reward": 0.5, "method_reward": 0.6, "diff": 0.1,
                                "ci_low": -0.1, "ci_high": 0.3, "n_seeds": 1, "n_samples": 4,
                                "flag": "", "improvement_pct": 20.0,
                                "verdict": "Positive" if lvl == "domain_sum" else ""}
                               for lvl, n in
                               [("domain_sum", "sum_over_domains"), ("all", "mean_over_tasks"),
                                ("domain", "math"), ("task", "t1"), ("task", "t2")]])  # fmt: skip
    overfit = pd.DataFrame([{"method": "pcgrad", "domain": "math", "n_seeds": 1, "n_overfit": 0,
                             "overfit_seeds": "", "overfit": False}])  # fmt: skip
    text = report.markdown(study="s", manifests={}, comparison=comparison, overfit=overfit,
                           confidence=0.95, n_resamples=100, validation_metric="score",
                           plot_name="p")  # fmt: skip
    assert "Multiple comparisons: 5 intervals" in text
    assert "no multiple-comparison correction is applied" in text and "about 0.3 of them" in text
    assert (
        "Seed 000's overall MTL effectiveness (the domain differences summed, +0.1000): "
        "**Positive**" in text
    )
    assert "| sum_over_domains | math | 0.5000 | 0.6000 | +0.1000 | +20.0% |" in text
    assert "last (latest kept, as seed 000)" in text and "| pcgrad | math | 0 of 1 | - |" in text


def test_seed_overall_sums_the_domain_differences_and_reports_improvement_pct(tmp_path):
    """3 tasks in 2 domains, 2 seeds: domain reward = mean of its tasks' rewards (each over
    seeds and samples); seed 000's overall = the sum over domains of method - baseline, Positive
    when > 0; improvement % = diff / baseline x 100 (analyze_results.py compare_models); the
    level-all row stays the mean over the 3 tasks."""
    domains = {"math": ["t1", "t2"], "logic": ["t3"]}
    rewards = {  # model -> task -> per-sample rewards
        "base_s1": {"t1": [0, 1, 0, 0], "t2": [1, 1], "t3": [0, 0, 1]},
        "base_s2": {"t1": [1, 1, 0, 0], "t2": [0, 1], "t3": [0, 1, 1]},
        "pc_s1": {"t1": [1, 1, 1, 0], "t2": [0, 1], "t3": [0, 0, 0]},
        "pc_s2": {"t1": [1, 1, 0, 1], "t2": [0, 0], "t3": [1, 0, 0]},
    }
    runs = {m: {"method": "baseline" if m.startswith("base") else "pcgrad", "seed": int(m[-1])}
            for m in rewards}  # fmt: skip
    mans = {m: manifest([5, 10], [0.1, 0.2]) for m in rewards}
    paths = [write_samples(tmp_path, m, 100, per_task) for m, per_task in rewards.items()]
    got = analysis.comparison_frame(paths, mans, runs, domains, confidence=0.9,
                                    n_resamples=300, seed=0).set_index("name")  # fmt: skip

    def task_mean(method, t):
        return np.mean([np.mean(rewards[f"{method}_s{s}"][t]) for s in (1, 2)])

    def domain_mean(method, d):
        return np.mean([task_mean(method, t) for t in domains[d]])

    total = 0.0
    for d in domains:
        b, m = domain_mean("base", d), domain_mean("pc", d)
        assert got.loc[d, "diff"] == pytest.approx(m - b)
        assert got.loc[d, "improvement_pct"] == pytest.approx((m - b) / b * 100)
        total += m - b
    overall = got.loc["sum_over_domains"]
    assert overall["level"] == "domain_sum" and overall["domain"] == "all"
    assert overall["diff"] == pytest.approx(total)
    assert overall["method_reward"] - overall["baseline_reward"] == pytest.approx(total)
    assert overall["verdict"] == ("Positive" if total > 0 else "Mixed")
    assert overall["ci_low"] <= overall["diff"] <= overall["ci_high"]
    tasks = ["t1", "t2", "t3"]
    mean3 = np.mean([task_mean("pc", t) - task_mean("base", t) for t in tasks])
    kept = got.loc["mean_over_tasks"]
    assert kept["level"] == "all" and kept["diff"] == pytest.approx(mean3)
    assert kept["verdict"] == "" and abs(total - mean3) > 0.05  # the two overall rows differ
    # the seed's rule: a baseline of 0 gives improvement 0 %
    assert analysis.improvement_pct(0.3, 0.0) == 0.0 and analysis.seed_verdict(0.0) == "Mixed"


def test_report_lists_each_tasks_own_metric_per_run_at_the_compared_checkpoint():
    """The task-metrics table: one row per task, one column per run, the value each
    evaluation reported (e.g. the guru engine's pass@1_(avg4)); a run without the task: -."""
    from ftlab.mtl import report

    comparison = pd.DataFrame([{"method": "pcgrad", "level": "domain_sum",
                                "name": "sum_over_domains", "domain": "all",
                                "baseline_reward": 0.5, "method_reward": 0.6, "diff": 0.1,
                                "ci_low": -0.1, "ci_high": 0.3, "n_seeds": 1, "n_samples": 4,
                                "flag": "", "improvement_pct": 20.0,
                                "verdict": "Positive"}])  # fmt: skip
    overfit = pd.DataFrame(columns=["method", "domain", "n_seeds", "n_overfit", "overfit_seeds"])
    metrics = pd.DataFrame([
        {"model": "baseline_s1", "task": "guru_aime", "domain": "math",
         "metric": "pass@1_(avg4)", "value": 12.5},
        {"model": "pcgrad_s1", "task": "guru_aime", "domain": "math",
         "metric": "pass@1_(avg4)", "value": 25.0},
        {"model": "baseline_s1", "task": "guru_math", "domain": "math",
         "metric": "pass@1_(avg1)", "value": 40.0},
    ])  # fmt: skip
    text = report.markdown(study="s", manifests={}, comparison=comparison, overfit=overfit,
                           confidence=0.95, n_resamples=100, validation_metric="score",
                           plot_name="p", task_metrics=metrics)  # fmt: skip
    assert "## Task metrics at the last (latest kept, as seed 000) checkpoint" in text
    assert "| task | domain | metric | baseline_s1 | pcgrad_s1 |" in text
    assert "| guru_aime | math | pass@1_(avg4) | 12.5 | 25 |" in text
    assert "| guru_math | math | pass@1_(avg1) | 40 | - |" in text
