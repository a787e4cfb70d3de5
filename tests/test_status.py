"""`ftlab status` on a half-finished tiny study: what Snakemake would run (checked against
`snakemake -n --summary`), outputs deleted, provenance written by the jobs, and under the local
SLURM cluster a training that fails on purpose, shown with its job id, state and logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.cli import main
from ftlab.registry import status
from ftlab.registry.store import Registry

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/config_tiny.yaml"
RES = "results/tiny"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
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
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(out.stdout[-3000:] + out.stderr[-3000:])
    return out


def by_key(jobs):
    return {(j.rule, j.unit, j.step): j for j in jobs}


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    """Base model and ftwb1-1 trained and evaluated; then one evaluation output deleted."""
    wd = tmp_path_factory.mktemp("status")
    snakemake(
        wd,
        "--cores",
        "2",
        f"{RES}/evals/ftwb1-1_seed1/checkpoint-6/angle__no_atlantis.json",
        f"{RES}/evals/base_seed1/checkpoint-44/angle__no_atlantis.json",
    )
    (wd / RES / "evals/ftwb1-1_seed1/checkpoint-6/distance__no_atlantis.json").unlink()
    return wd


def test_status_agrees_with_snakemake_summary(half_done):
    cfg, jobs, _ = status.collect(str(TINY), workdir=half_done, use_slurm=False)
    k = by_key(jobs)
    assert k[("train_base", "base_seed1", None)].state == "done"
    assert k[("train_finetune", "ftwb1-1_seed1", None)].state == "done"
    assert k[("evaluate", "base_seed1", 44)].state == "done"
    deleted = k[("evaluate", "ftwb1-1_seed1", 6)]
    assert deleted.state == "pending" and "Missing output" in deleted.reason
    assert k[("train_finetune", "ftwb1-2_seed1", None)].state == "pending"
    # Independent view: snakemake's own summary of which outputs it would (re)make.
    summary = snakemake(half_done, "-n", "--summary").stdout.splitlines()
    rows = [line.split("\t") for line in summary if line.startswith("results/")]
    pending_files = {r[0] for r in rows if r[-1] == "update pending"}
    ours = {o for j in jobs if j.state != "done" for o in j.outputs}
    done_files = {o for j in jobs if j.state == "done" for o in j.outputs}
    assert pending_files <= ours | {"results/tiny"}  # the summary lists outputs only
    assert not pending_files & done_files
    assert {r[0] for r in rows if r[-1] == "no update"} <= done_files


def test_status_cli_and_provenance(half_done, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rc = main(["status", str(TINY), "-d", str(half_done), "--slurm", "no"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "study tiny (worldmodel)" in out
    row = next(line for line in out.splitlines() if line.startswith("ftwb1-1_seed1"))
    assert "pending @6" in row and "done" in row
    # the jobs wrote provenance and recorded themselves in the index
    prov = json.loads((half_done / RES / "models/base_seed1/provenance.json").read_text())
    assert prov["stage"] == "train" and prov["git"]["commit"] and prov["wall_s"] > 0
    ev = half_done / RES / "evals/base_seed1/checkpoint-44/provenance.json"
    assert json.loads(ev.read_text())["data_sha256"]
    with Registry(half_done / "results", refresh=False) as reg:
        assert {r["model"] for r in reg.runs()} >= {"base_seed1", "ftwb1-1_seed1"}
    rc = main(["show", "--results", str(half_done / "results"), "base_seed1"])
    assert rc == 0 and "provenance (train" in capsys.readouterr().out


def _slurm_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _slurm_up(), reason="no SLURM cluster (sinfo -h fails)")
def test_failed_slurm_job_is_shown_with_its_log(tmp_path):
    wd = tmp_path
    # Data locally, then a corrupt pretraining set: the SLURM training job fails on purpose.
    snakemake(wd, "--cores", "2", f"{RES}/data/multitask/no_atlantis/train.jsonl")
    (wd / RES / "data/multitask/no_atlantis/train.jsonl").write_text("{not json\n")
    shutil.copytree(REPO / "slurm", wd / "slurm")  # the profile, found in the workdir
    run = snakemake(
        wd,
        "--profile",
        "slurm",
        "--workflow-profile",
        str(REPO / "tests/slurm_profile"),
        "--retries",
        "0",
        f"{RES}/models/base_seed1",
        check=False,
    )
    assert run.returncode != 0
    cfg, jobs, _ = status.collect(str(TINY), workdir=wd, use_slurm=True)
    train = by_key(jobs)[("train_base", "base_seed1", None)]
    assert train.state == "failed", (train, run.stderr[-2000:])
    assert train.slurm.job_id.isdigit() and train.slurm.state.startswith("FAILED")
    assert Path(train.slurm.log).is_file()
    text = status.render(cfg, jobs)
    assert f"SLURM job {train.slurm.job_id} FAILED" in text
    assert train.slurm.log in text and "logs/train/base_seed1.log" in text
