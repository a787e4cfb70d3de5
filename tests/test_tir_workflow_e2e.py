"""The TIR study kind end to end through Snakemake on CPU (tests/config_tir_tiny.yaml): tiny
base model, GRPO with multi-turn sandbox rollouts, generation, scoring, table; then a scorer
change re-runs scoring only (no generation, no training)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftlab.tir.passk import pass_at_k

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
RES = "results/tir_tiny"
EVAL = "evals/{model}/checkpoint-{step}/arith__tools"


def snakemake(workdir: Path, configfile: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args, "--configfile", str(configfile)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def rules_run(log: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in log.splitlines()
            if line.startswith(("rule ", "localrule "))]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tir")
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    configfile = workdir / "tir_tiny.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    snakemake(workdir, configfile, "--cores", "2")
    return workdir, cfg


def test_generations_scores_and_table(run):
    workdir, cfg = run
    res = workdir / RES
    rows = {r["id"]: r["answer"] for r in map(json.loads, (res / "data/arith/rows.jsonl").open())}
    for model, step in (("base", 0), ("multiturn_seed1", 2)):
        ev = res / EVAL.format(model=model, step=step)
        gens = [json.loads(line) for line in (ev / "generations.jsonl").open()]
        assert len(gens) == len(rows) * 3  # n = 3 per problem
        for g in gens:
            assert 1 <= g["n_turns"] <= 3 and g["stop_reason"]
            for t in g["turns"]:
                assert {"text", "code", "tool", "observation", "gen_tokens", "gen_seconds"} <= set(
                    t
                )
        scores = json.loads((ev / "scores.json").read_text())
        scored = [json.loads(line) for line in (ev / "scored.jsonl").open()]
        # pass@k recomputed here from the per-sample verdicts
        per_problem = {}
        for v in scored:
            per_problem.setdefault(v["problem_id"], []).append(v["correct"])
        for k in (1, 2, 3):
            expected = sum(pass_at_k(3, sum(c), k) for c in per_problem.values()) / len(rows)
            assert scores["pass_at_k"][str(k)] == pytest.approx(expected)
        assert scores["mean_turns"] == pytest.approx(sum(g["n_turns"] for g in gens) / len(gens))
        info = json.loads((ev / "generation_info.json").read_text())
        assert info["n_samples"] == len(gens) and info["sandbox"]["network"]
        prov = json.loads((ev / "provenance.json").read_text())  # the eval set's own job
        assert (prov["stage"], prov["model"], prov["step"]) == ("evaluate", model, step)
    log = (res / "models/multiturn_seed1/training_log.csv").read_text()
    assert "tir/void_sample_rate" in log and "tir/mean_turns" in log
    # the tracker's provenance of the run (git, host, wall time), as the other kinds write it
    prov = json.loads((res / "models/multiturn_seed1/provenance.json").read_text())
    assert prov["stage"] == "train" and prov["model"] == "multiturn_seed1"
    table = pd.read_csv(res / "tables/tir_scores.csv")
    assert set(table.model) == {"base", "multiturn_seed1"} and set(table.k) == {1, 2, 3}


def test_a_scorer_change_reruns_scoring_only(run):
    workdir, cfg = run
    res = workdir / RES
    gen_file = res / EVAL.format(model="base", step=0) / "generations.jsonl"
    before = gen_file.stat().st_mtime_ns
    verdicts_before = [json.loads(line) for line in gen_file.with_name("scored.jsonl").open()]
    cfg = json.loads(json.dumps(cfg))
    # a scorer whose options change verdicts: grader ftlab (the default grader, simpletir,
    # ignores extraction and tolerances) with a tolerance that accepts any number
    cfg["tir"]["scoring"] = {"grader": "ftlab", "extraction": "boxed_or_last_number",
                             "abs_tol": 1.0e12}  # fmt: skip
    configfile = workdir / "tir_tiny_rescored.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    log = snakemake(workdir, configfile, "--cores", "2")
    ran = rules_run(log)
    assert "tir_score" in ran and "tir_generate" not in ran and "train_tir" not in ran
    assert set(ran) <= {"tir_score", "tir_table", "all"}
    assert gen_file.stat().st_mtime_ns == before
    scores = json.loads(gen_file.with_name("scores.json").read_text())
    assert scores["scorer"]["grader"] == "ftlab"
    # every sample whose prediction is a number is now correct, checked against its own
    # prediction; the tiny model's wrong numeric answers flip
    after = [json.loads(line) for line in gen_file.with_name("scored.jsonl").open()]
    number = re.compile(r"-?(\d+(\.\d*)?|\.\d+)(/-?\d+)?")
    assert [v["correct"] for v in after] == [
        v["pred"] is not None
        and number.fullmatch(v["pred"].replace(",", "").replace(" ", "").rstrip(".")) is not None
        for v in after
    ]
    assert sum(v["correct"] for v in after) > sum(v["correct"] for v in verdicts_before)
    per_problem = {}
    for v in after:
        per_problem.setdefault(v["problem_id"], []).append(v["correct"])
    expected = sum(pass_at_k(3, sum(c), 1) for c in per_problem.values()) / len(per_problem)
    assert scores["pass_at_k"]["1"] == pytest.approx(expected)
    assert "Nothing to be done" in snakemake(workdir, configfile, "-n")
