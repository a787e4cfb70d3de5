"""Tiny sft and grpo multi-task studies end to end through Snakemake on CPU: the tiny causal
LM, two project-generated datasets as two tasks, baseline and PCGrad through TRL, early
stopping; training writes the manifest, the DAG evaluates exactly the kept checkpoints (local
lm-eval tasks), the report compares the methods."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_mtl_workflow_e2e import assert_exactly_the_kept_checkpoints_evaluated

from ftlab.config import load_config
from ftlab.mtl.early_stopping import EarlyStopping, kept_checkpoints
from ftlab.mtl.study import MTLStudy
from ftlab.paths import Layout

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, config: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def planned_jobs(workdir: Path, config: Path) -> dict[str, int]:
    text = snakemake(workdir, config, "-n", "--quiet", "rules")
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture(scope="module", params=["sft", "grpo"])
def run(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"mtl_{request.param}")
    cfg = yaml.safe_load((REPO / f"tests/config_mtl_{request.param}_tiny.yaml").read_text())
    cfg["mtl"]["eval"]["lm_eval"]["include_path"] = str(REPO / "tests/fixtures/lm_eval_tasks")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    before = planned_jobs(workdir, config)
    snakemake(workdir, config, "--cores", "2")
    study = MTLStudy(load_config(config))
    return workdir, config, study, Layout(study.cfg["study"]), before


def manifests(workdir, study, layout):
    return {m: json.loads((workdir / layout.path("mtl_manifest", model=m)).read_text())
            for m in study.runs}  # fmt: skip


def test_dry_run_before_training_shows_training_not_evaluation(run):
    _, _, study, _, before = run
    assert before["mtl_train"] == len(study.runs) == 2
    assert before["mtl_tiny_base"] == 1 and before["mtl_dataset"] == 2
    assert "mtl_evaluate" not in before


def test_manifest_follows_the_early_stopping_rule(run):
    """Replaying the logged validations through EarlyStopping gives the manifest's stop, and
    the kept checkpoints are the keep_last rule applied to the saved epochs."""
    workdir, _, study, layout, _ = run
    mtl = study.mtl
    for name, m in manifests(workdir, study, layout).items():
        stopper = EarlyStopping(**mtl["early_stopping"])
        stopped = [e for e, v in ((d["epoch"], d["value"]) for d in m["validations"])
                   if stopper.update(e, v)]  # fmt: skip
        assert m["stop_reason"] == ("early_stopping" if stopped else "max_epochs"), name
        assert m["last_epoch"] == (stopped[0] if stopped else mtl["training"]["epochs"])
        values = {c["epoch"]: c["validation"] for c in m["checkpoints"]}
        kept, selected = kept_checkpoints(m["saved_epochs"], {**values, **{
            d["epoch"]: d["value"] for d in m["validations"]}},
            mtl["checkpoints"]["keep_last"], mtl["early_stopping"]["mode"])  # fmt: skip
        assert [c["epoch"] for c in m["checkpoints"]] == kept
        assert m["selected"]["epoch"] == selected
        assert [c["step"] for c in m["checkpoints"]] == [e * study.steps_per_epoch for e in kept]
        folder = workdir / layout.path("model_dir", model=name)
        on_disk = sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))
        assert on_disk == [c["step"] for c in m["checkpoints"]]
        ckpt = workdir / layout.path("checkpoint", model=name, step=m["selected"]["step"])
        assert (ckpt / "model.safetensors").is_file() and not (ckpt / "optimizer.pt").exists()


def test_some_run_stops_early(run):
    workdir, _, study, layout, _ = run
    assert any(m["stop_reason"] == "early_stopping"
               for m in manifests(workdir, study, layout).values())  # fmt: skip


def test_exactly_the_kept_checkpoints_are_evaluated(run):
    workdir, _, study, layout, _ = run
    assert_exactly_the_kept_checkpoints_evaluated(workdir, study, layout)


def test_report_compares_pcgrad_with_baseline(run):
    workdir, config, study, layout, _ = run
    comp = pd.read_csv(workdir / layout.mtl_comparison_table)
    assert set(comp["method"]) == {"pcgrad"}
    assert set(comp[comp["level"] == "domain"]["name"]) == set(study.domains)
    # the per-task difference is the difference of the LAST kept checkpoints' mean rewards
    # (seed 000 compares the latest checkpoints; mtl.report.checkpoint default "last")
    mans = manifests(workdir, study, layout)
    means = {}
    for name, m in mans.items():
        last = max(m["checkpoints"], key=lambda c: c["epoch"])
        assert last["epoch"] == m["last_epoch"]  # the last epoch trained is always kept
        path = layout.path("mtl_eval", model=name, step=last["step"])
        ev = json.loads((workdir / path).read_text())
        means[m["method"]] = {t["task"]: t["reward"] for t in ev["tasks"]}
    task_diff = {t: means["pcgrad"][t] - means["baseline"][t] for t in means["pcgrad"]}
    for _, row in comp[comp["level"] == "task"].iterrows():
        assert row["diff"] == pytest.approx(task_diff[row["name"]], abs=1e-9)
    # domains and "all": the unweighted mean of their tasks' differences
    for _, row in comp[comp["level"] == "domain"].iterrows():
        tasks = [t for t, d in study.suite.items() if d == row["name"]]
        expected = sum(task_diff[t] for t in tasks) / len(tasks)
        assert row["diff"] == pytest.approx(expected, abs=1e-9)
    (overall,) = comp[comp["level"] == "all"]["diff"]
    assert overall == pytest.approx(sum(task_diff.values()) / len(task_diff), abs=1e-9)
    assert "## pcgrad vs baseline" in (workdir / layout.mtl_report).read_text()
    assert planned_jobs(workdir, config) == {}
