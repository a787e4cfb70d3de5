"""The tiny multi-task study end to end through Snakemake: world tasks, baseline and PCGrad,
2 seeds, early stopping; the DAG evaluates exactly the checkpoints each run kept."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ftlab.config import load_config
from ftlab.mtl.study import MTLStudy
from ftlab.paths import Layout

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests/config_mtl_tiny.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(CONFIG), *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def planned_jobs(workdir: Path) -> dict[str, int]:
    text = snakemake(workdir, "-n", "--quiet", "rules")
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mtl_tiny")
    before = planned_jobs(workdir)
    snakemake(workdir, "--cores", "2")
    study = MTLStudy(load_config(CONFIG))
    return workdir, study, Layout(study.cfg["study"]), before


def manifests(workdir, study, layout):
    return {m: json.loads((workdir / layout.path("mtl_manifest", model=m)).read_text())
            for m in study.runs}  # fmt: skip


def test_dry_run_before_training_shows_what_is_knowable(run):
    _, study, _, before = run
    # data and the 4 trainings are known; evaluations depend on what early stopping keeps
    assert before["mtl_train"] == len(study.runs) == 4
    assert before["mtl_report"] == 1 and "mtl_evaluate" not in before


def test_early_stopping_stops_a_run_and_keeps_checkpoints(run):
    workdir, study, layout, _ = run
    mans = manifests(workdir, study, layout)
    assert any(m["stop_reason"] == "early_stopping" for m in mans.values())
    for name, m in mans.items():
        spe = study.steps_per_epoch
        kept = [c["step"] for c in m["checkpoints"]]
        on_disk = sorted(
            int(p.name.split("-")[1]) for p in (workdir / layout.path("model_dir", model=name))
            .glob("checkpoint-*")
        )  # fmt: skip
        assert on_disk == kept
        assert m["last_epoch"] * spe == max(kept) or m["selected"]["step"] == max(kept)
        assert [c["selected"] for c in m["checkpoints"]].count(True) == 1
        if m["stop_reason"] == "early_stopping":
            assert m["last_epoch"] < study.mtl["training"]["epochs"]
            assert m["last_epoch"] >= study.mtl["early_stopping"]["min_epochs"]


def assert_exactly_the_kept_checkpoints_evaluated(workdir, study, layout):
    """Every checkpoint the manifest kept has its evaluation on every suite task; no other."""
    for name, m in manifests(workdir, study, layout).items():
        evaluated = sorted(
            int(p.parent.name.split("-")[1])
            for p in (workdir / "results" / study.cfg["study"] / "evals" / name).glob(
                "checkpoint-*/mtl_eval.json"
            )
        )
        assert evaluated == [c["step"] for c in m["checkpoints"]], name
        for step in evaluated:
            ev = json.loads((workdir / layout.path("mtl_eval", model=name, step=step)).read_text())
            assert {t["task"] for t in ev["tasks"]} == set(study.suite)


def test_exactly_the_kept_checkpoints_are_evaluated(run):
    workdir, study, layout, _ = run
    assert_exactly_the_kept_checkpoints_evaluated(workdir, study, layout)


def test_report_tables(run):
    workdir, study, layout, _ = run
    comp = pd.read_csv(workdir / layout.mtl_comparison_table)
    assert set(comp["method"]) == {"pcgrad"}
    assert set(comp[comp["level"] == "task"]["name"]) == set(study.suite)
    assert set(comp[comp["level"] == "domain"]["name"]) == set(study.domains)
    assert (comp["ci_low"] <= comp["diff"] + 1e-12).all() and (
        comp["diff"] <= comp["ci_high"] + 1e-12
    ).all()
    assert (comp["n_seeds"] == 2).all()
    evo = pd.read_csv(workdir / layout.mtl_evolution_table)
    mans = manifests(workdir, study, layout)
    for name, g in evo[evo["domain"] == "all"].groupby("model"):
        assert sorted(g["epoch"]) == [c["epoch"] for c in mans[name]["checkpoints"]]
    text = (workdir / layout.mtl_report).read_text()
    assert "## pcgrad vs baseline" in text and "Overfitting" in text
    assert (workdir / layout.path("plot", plot="mtl_evolution")).stat().st_size > 0


def test_rerun_is_idempotent_and_a_deleted_evaluation_is_rebuilt(run):
    workdir, study, layout, _ = run
    assert planned_jobs(workdir) == {}
    name = next(iter(study.runs))
    man = manifests(workdir, study, layout)[name]
    step = man["checkpoints"][0]["step"]
    (workdir / layout.path("mtl_eval", model=name, step=step)).unlink()
    jobs = planned_jobs(workdir)
    assert jobs.get("mtl_evaluate") == 1 and "mtl_train" not in jobs


def test_html_report(run):
    workdir, _, _, _ = run
    snakemake(workdir, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "mtl_comparison.csv" in html and "mtl_evolution.png" in html
