"""The LLM study kind end to end through Snakemake on CPU: a tiny causal LM, project-written
GSM8K/TriviaQA-format data, local lm-eval tasks (generate_until + multiple_choice)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

CONFIG = {
    "kind": "llm",
    "study": "llm_tiny",
    "seeds": [1],
    "llm": {
        "base_model": "tiny",
        "datasets": {
            "gsm8k": {
                "format": "gsm8k",
                "train": "builtin:gsm8k",
                "test": "builtin:gsm8k",
                "limit_train": 16,
                "limit_test": 6,
            },
            "triviaqa": {
                "format": "triviaqa",
                "train": "builtin:triviaqa",
                "test": "builtin:triviaqa",
                "limit_train": 16,
                "limit_test": 6,
            },
        },
        "methods": ["gt_sft", "grpo"],
        "teacher": {"model": "tiny", "backend": "hf", "max_new_tokens": 8, "batch_size": 8},
        "sft": {
            "lr": 0.001,
            "max_steps": 4,
            "save_steps": 2,
            "batch_size": 4,
            "grad_accum": 1,
            "max_length": 256,
        },
        "grpo": {
            "lr": 0.0001,
            "max_steps": 2,
            "save_steps": 1,
            "batch_size": 4,
            "num_generations": 2,
            "max_prompt_length": 256,
            "max_completion_length": 8,
        },
        "benchmarks": {"ftlab_tiny_arith": "exact_match", "ftlab_tiny_mc": "acc_norm"},
        "lm_eval": {"batch_size": 4, "include_path": str(REPO / "tests/fixtures/lm_eval_tasks")},
        "in_domain": {"limit": 4, "max_new_tokens": 8, "batch_size": 4},
        "checkpoints": "all",
    },
}


def snakemake(workdir: Path, configfile: Path, *args: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        *args,
        "--configfile",
        str(configfile),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm")
    configfile = workdir / "llm_tiny.yaml"
    configfile.write_text(yaml.safe_dump(CONFIG))
    report = "results/llm_tiny/data/gsm8k/teacher_report.json"
    snakemake(workdir, configfile, "--cores", "2", "all", report)
    return workdir, configfile


def test_every_checkpoint_and_the_base_are_evaluated(run):
    workdir, _ = run
    res = workdir / "results/llm_tiny"
    points = [("base", 0)] + [
        (f"{m}-{d}_seed1", s)
        for d in ("gsm8k", "triviaqa")
        for m, steps in (("gt_sft", (2, 4)), ("grpo", (1, 2)))
        for s in steps
    ]
    for model, step in points:
        evals = res / f"evals/{model}/checkpoint-{step}"
        metrics = json.loads((evals / "lm_eval.json").read_text())
        assert {b["task"] for b in metrics["benchmarks"]} == {"ftlab_tiny_arith", "ftlab_tiny_mc"}
        assert (evals / "lm_eval.samples.jsonl").stat().st_size
        in_domain = json.loads((evals / "in_domain.json").read_text())
        assert set(in_domain["datasets"]) == {"gsm8k", "triviaqa"}
    ckpt = res / "models/gt_sft-gsm8k_seed1/checkpoint-4"
    assert json.loads((ckpt / "ftlab_checkpoint.json").read_text())["step"] == 4
    assert not (res / "train_state/gt_sft-gsm8k_seed1").exists()


def test_forgetting_tables_and_plots(run):
    workdir, _ = run
    res = workdir / "results/llm_tiny"
    forgetting = pd.read_csv(res / "tables/forgetting.csv")
    # forgetting is recomputed here independently, from the raw per-checkpoint lm_eval.json
    # files: score minus the base model's score (the base is each run's step-0 point)
    raw = {}
    for path in res.glob("evals/*/checkpoint-*/lm_eval.json"):
        result = json.loads(path.read_text())
        model, step = path.parts[-3], int(path.parent.name.removeprefix("checkpoint-"))
        assert (result["model"], result["step"]) == (model, step)
        for b in result["benchmarks"]:
            raw[model, step, b["task"]] = b["value"]
    base = {bench: v for (model, _, bench), v in raw.items() if model == "base"}
    assert set(base) == {"ftlab_tiny_arith", "ftlab_tiny_mc"}
    expected = {
        (model, step, bench): v - base[bench]
        for (model, step, bench), v in raw.items()
        if model != "base"
    }
    runs = {model for model, _, _ in expected}
    expected |= {(m, 0, bench): 0.0 for m in runs for bench in base}
    got = {(r.model, r.step, r.benchmark): (r.value, r.forgetting) for r in forgetting.itertuples()}
    assert got.keys() == expected.keys()
    for key, (value, forgot) in got.items():
        model, step, bench = key
        assert value == raw["base" if step == 0 else model, step, bench]
        assert forgot == pytest.approx(expected[key], abs=1e-12)
    # the old check, on the table alone
    base_col = forgetting[forgetting.step == 0].groupby("benchmark").value.first()
    expected_col = forgetting.value - forgetting.benchmark.map(base_col)
    assert (forgetting.forgetting - expected_col).abs().max() < 1e-12
    # every checkpoint's paired bootstrap vs the base, carried into the table
    for row in forgetting[forgetting.step > 0].itertuples():
        vs = json.loads((res / f"evals/{row.model}/checkpoint-{row.step}/vs_base.json").read_text())
        r = vs["benchmarks"][row.benchmark]
        assert r["estimate"] == pytest.approx(row.forgetting, abs=1e-12)
        assert (row.ci_low, row.ci_high, row.significant) == (r["ci_low"], r["ci_high"],
                                                              r["significant"])  # fmt: skip
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
    assert forgetting.stderr.notna().all() and forgetting.base_stderr.notna().all()
    summary = pd.read_csv(res / "tables/forgetting_summary.csv")
    seeds = summary[summary.seed.astype(str) == "all"]  # one seed: mean, no interval
    assert len(seeds) == 4 and seeds.ci_low.isna().all() and (seeds.n_seeds == 1).all()
    summary = summary[summary.seed.astype(str) != "all"]
    assert len(summary) == 4 and set(summary.method) == {"gt_sft", "grpo"}
    assert (summary.ci_low <= summary.avg_forgetting).all()
    assert (summary.avg_forgetting <= summary.ci_high).all()
    for row in summary.itertuples():  # Key Results: mean and worst at each run's last step
        last = {b: f for (m, s, b), f in expected.items() if m == row.model and s == row.step}
        assert row.step == max(s for m, s, _ in expected if m == row.model)
        assert row.avg_forgetting == pytest.approx(sum(last.values()) / len(last), abs=1e-12)
        assert row.worst_forgetting == pytest.approx(min(last.values()), abs=1e-12)
    in_domain = pd.read_csv(res / "tables/in_domain.csv")
    assert {"accuracy", "partial_accuracy", "format_accuracy"} <= set(in_domain.columns)
    for plot in ("forgetting_summary", "forgetting_gsm8k", "in_domain_triviaqa"):
        assert (res / f"plots/{plot}.png").stat().st_size > 1000
    report = json.loads((res / "data/gsm8k/teacher_report.json").read_text())
    assert report["n_kept"] <= report["n_generated"]
    data_report = json.loads((res / "data/gsm8k/data_report.json").read_text())
    assert data_report["train"]["rows"] == 16 and data_report["train"]["dropped"] == {}
    assert json.loads((res / "preflight.json").read_text())["problems"] == []


def test_rerun_is_a_no_op_and_evals_come_from_the_cache(run):
    workdir, configfile = run
    assert "Nothing to be done" in snakemake(workdir, configfile, "-n")
    # forcing one evaluation again recomputes nothing: every request is in the sample cache
    target = "results/llm_tiny/evals/grpo-gsm8k_seed1/checkpoint-2/lm_eval.json"
    snakemake(workdir, configfile, "--cores", "1", "--forcerun", "evaluate_llm", target)
    again = json.loads((workdir / target).read_text())
    assert again["n_computed"] == 0 and again["n_cached"] > 0


def test_report_shows_forgetting(run):
    workdir, configfile = run
    report = workdir / "report.html"
    snakemake(workdir, configfile, "--report", str(report))
    html = report.read_text(errors="ignore")
    assert "forgetting_summary.png" in html and "in_domain_gsm8k.png" in html
