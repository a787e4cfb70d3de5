"""The tiny study end to end through Snakemake, in a temporary working directory."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ftlab.config import load_config
from ftlab.paths import Layout
from ftlab.study import Study

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/config_tiny.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(TINY),
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


def planned_jobs(workdir: Path, *targets: str) -> dict[str, int]:
    out = snakemake(workdir, "-n", "--quiet", "rules", *targets)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", "2")
    study = Study(load_config(TINY))
    return workdir, study, Layout(study.cfg["study"])


def test_all_contract_files_exist(run):
    workdir, study, layout = run
    cities = pd.read_csv(workdir / layout.cities)
    assert list(cities.columns) == ["city_id", "name", "x", "y", "is_atlantis"]
    assert cities.is_atlantis.sum() == study.cfg["data"]["n_atlantis"]
    for task in study.tasks:
        for variant in ("no_atlantis", "atlantis_required"):
            for split in ("train", "test"):
                path = workdir / layout.path("task_split", task=task, variant=variant, split=split)
                first = json.loads(path.read_text().splitlines()[0])
                assert set(first) == {"text"} and "=" in first["text"]
    for name, spec in study.models.items():
        for step in spec.saved_steps:
            ckpt = workdir / layout.path("checkpoint", model=name, step=step)
            meta = json.loads((ckpt / "ftlab_checkpoint.json").read_text())
            assert meta["step"] == step and meta["seed"] == spec.seed
        for step in spec.eval_steps:
            metrics = json.loads(
                (workdir / layout.path("eval_metrics", model=name, step=step)).read_text()
            )
            assert metrics["eval_sets"] == study.eval_sets()
            assert {r["eval_set"] for r in metrics["results"]} == set(study.eval_sets())
            samples = workdir / layout.path("eval_samples", model=name, step=step)
            sets = {json.loads(line)["eval_set"] for line in samples.read_text().splitlines()}
            assert sets == set(study.eval_sets())
        probe = workdir / layout.path("probe", model=name, step=spec.final_step)
        assert json.loads(probe.read_text())["model"] == name
        assert not (workdir / layout.path("train_state", model=name)).exists()
    for plot in (
        "seed1_ftwb1_heatmap",
        "seed1_ftwb2_heatmap",
        "seed1_ftwb2_actual_minus_expected",
        "probes",
    ):
        assert (workdir / layout.path("plot", plot=plot)).stat().st_size > 1000


def test_eval_sets_index_names_every_set(run):
    """data/eval_sets.json: each eval set in config order, with its path, rows and sha256."""
    workdir, study, layout = run
    index = json.loads((workdir / layout.eval_sets).read_text())["sets"]
    assert [s["eval_set"] for s in index] == study.eval_sets()
    for s in index:
        data = (workdir / s["path"]).read_bytes()
        assert s["rows"] == len(data.decode().splitlines()) > 0
        assert s["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_rewritten_eval_set_re_runs_every_evaluation(run):
    """Evaluation jobs depend on the index only; a changed set still reaches all of them."""
    workdir, study, layout = run
    # an Atlantis test set: read by evaluation only (the no_atlantis ones feed the multitask mix)
    path = layout.path("task_split", task="angle", variant="atlantis_required", split="test")
    path = workdir / path
    rows = path.read_bytes()
    path.write_bytes(rows + b"\n")
    jobs = planned_jobs(workdir)
    n_evals = sum(len(spec.eval_steps) for spec in study.models.values())
    assert jobs.get("eval_sets") == 1 and jobs.get("evaluate") == n_evals, jobs
    assert not {"train_base", "train_finetune", "represent"} & set(jobs)
    # the same bytes again: Snakemake's recorded checksum matches, nothing is due
    path.write_bytes(rows)
    assert planned_jobs(workdir) == {}


def test_checkpoints_load_with_auto_classes(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    workdir, study, layout = run
    spec = study.model("ftwb2-1_seed1")
    ckpt = workdir / layout.path("checkpoint", model=spec.name, step=spec.final_step)
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = tok("dist(c_1234,", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tok)


def test_tables(run):
    workdir, study, layout = run
    metrics = pd.read_csv(workdir / layout.metrics_table)
    for col in [
        "model",
        "seed",
        "kind",
        "trained_tasks",
        "step",
        "task",
        "variant",
        "metric",
        "value",
        "n",
    ]:
        assert col in metrics.columns
    # 14 per-task sets + 7 task rows from the multitask set, per model
    assert len(metrics) == len(study.models) * (2 * len(study.tasks) + len(study.tasks))
    normalized = pd.read_csv(workdir / layout.normalized_table)
    for col in ["normalized", "expected", "actual_minus_expected", "cell"]:
        assert col in normalized.columns
    ft = normalized[(normalized.kind == "ftwb2") & (normalized.variant == "atlantis_required")]
    # expected is defined wherever normalization is (a tiny model can tie its two baselines)
    defined = ft.baseline_standard != ft.baseline_atlantis
    assert ft[defined].expected.notna().all()
    assert ft[defined].actual_minus_expected.notna().all()
    assert set(ft.cell) == {"trained", "transfer"}
    base = normalized[normalized.kind == "base"]
    assert (base.cell == "baseline").all()


def test_nothing_left_to_do(run):
    workdir, _, _ = run
    assert planned_jobs(workdir) == {}


def test_deleting_one_model_rebuilds_only_what_depends_on_it(run):
    workdir, study, layout = run
    shutil.rmtree(workdir / layout.path("model_dir", model="ftwb1-2_seed1"))
    jobs = planned_jobs(workdir)
    assert jobs == {
        "train_finetune": 1,
        "evaluate": 1,
        "represent": 1,
        "tables": 1,
        "plot_ftwb_heatmap": 1,
        "plot_actual_minus_expected": 1,
        "plot_probes": 1,
        "all": 1,
    }
    snakemake(workdir, "--cores", "2")
    assert planned_jobs(workdir) == {}


def test_deleting_one_evaluation_file_rebuilds_its_job(run):
    """Rule all requests both files of each evaluation job: a deleted samples file (no rule
    reads it) or metrics file brings the job back, and what reads its metrics."""
    workdir, study, layout = run
    for name in ("eval_samples", "eval_metrics"):
        (workdir / layout.path(name, model="ftwb1-1_seed1", step=6)).unlink()
        jobs = planned_jobs(workdir)
        assert jobs["evaluate"] == 1 and jobs["tables"] == 1
        assert not {"train_base", "train_finetune", "represent"} & set(jobs)
        snakemake(workdir, "--cores", "2")
        assert planned_jobs(workdir) == {}


def test_report_shows_plots(run):
    workdir, _, _ = run
    report = workdir / "report.html"
    snakemake(workdir, "--report", str(report))
    html = report.read_text(errors="ignore")
    assert "seed1_ftwb2_heatmap.png" in html and "probes.png" in html
