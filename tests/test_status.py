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
from ftlab.registry import slurmjobs, status
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
    """Base model and ftwb1-1 trained and evaluated; then one evaluation output deleted (its
    samples file: rule all requests it, so the evaluation is pending again)."""
    wd = tmp_path_factory.mktemp("status")
    snakemake(
        wd,
        "--cores",
        "2",
        f"{RES}/evals/ftwb1-1_seed1/checkpoint-6/world_eval.json",
        f"{RES}/evals/base_seed1/checkpoint-44/world_eval.json",
    )
    (wd / RES / "evals/ftwb1-1_seed1/checkpoint-6/world_eval.samples.jsonl").unlink()
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


# -- the saved plan: what it decides from the disk equals Snakemake's own DAG ----------------
def _answer(jobs):
    return {(j.rule, j.unit, j.step): (j.state, j.reason) for j in jobs}


def _dag_and_plan(wd):
    """Snakemake's answer (DAG built, plan saved) and the answer from the saved plan alone."""
    from ftlab.registry import plan

    _, slow, _ = status.collect(str(TINY), workdir=wd, use_slurm=False, cache=False)
    key = plan.plan_key([TINY.resolve()], wd.resolve(), (REPO / "Snakefile").resolve())
    saved = plan.load(wd.resolve(), key)
    assert saved is not None and not saved["unsupported"]
    assert saved["emulated_ok"], "the plan's needrun disagreed with Snakemake's DAG"
    assert status.usable(saved, plan.Disk(wd))
    _, fast, _ = status.collect(str(TINY), workdir=wd, use_slurm=False, cache=True)
    return _answer(slow), _answer(fast)


def test_saved_plan_agrees_with_the_dag(half_done, tmp_path):
    from ftlab.registry.plan import Records, _record_path

    def fresh(name):
        wd = tmp_path / name
        shutil.copytree(half_done, wd, symlinks=True)
        return wd

    wd = fresh("as_is")
    slow, fast = _dag_and_plan(wd)
    assert fast == slow
    assert slow[("evaluate", "ftwb1-1_seed1", 6)] == ("pending", "Missing output files")
    assert slow[("evaluate", "base_seed1", 44)][0] == "done"

    # A changed param recorded in Snakemake's metadata: the rule re-runs.
    wd = fresh("params")
    recs = Records(wd)
    path = Path(_record_path(recs.meta, f"{RES}/models/ftwb1-1_seed1", recs.max_len))
    record = json.loads(path.read_text())
    record["params"] = [*record["params"], "'changed'"]
    path.write_text(json.dumps(record))
    slow, fast = _dag_and_plan(wd)
    assert fast == slow
    assert "Params have changed" in slow[("train_finetune", "ftwb1-1_seed1", None)][1]

    # A job that started and never finished: its outputs are marked incomplete.
    wd = fresh("incomplete")
    recs = Records(wd)
    marker = Path(_record_path(recs.incomplete_dir, f"{RES}/models/base_seed1", recs.max_len))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": None}))
    slow, fast = _dag_and_plan(wd)
    assert fast == slow
    assert slow[("train_base", "base_seed1", None)][0] == "incomplete"

    # An input newer than the outputs (a test set rewritten): its evaluations re-run.
    wd = fresh("mtime")
    test_set = wd / RES / "data/angle/no_atlantis/test.jsonl"
    test_set.write_text(test_set.read_text() + "\n")
    slow, fast = _dag_and_plan(wd)
    assert fast == slow
    assert slow[("evaluate", "base_seed1", 44)][0] == "pending"  # was done


def test_plan_follows_the_config(half_done, tmp_path):
    """Another config (another key) is a new DAG, not the old plan."""
    from ftlab.registry import plan

    wd = tmp_path / "copy"
    shutil.copytree(half_done, wd, symlinks=True)
    cfg = tmp_path / "tiny2.yaml"
    cfg.write_text(TINY.read_text().replace("ftwb1: [1, 2]", "ftwb1: [1]"))
    k1 = plan.plan_key([TINY.resolve()], wd, REPO / "Snakefile")
    k2 = plan.plan_key([cfg.resolve()], wd, REPO / "Snakefile")
    assert k1 != k2
    _, jobs, _ = status.collect(str(cfg), workdir=wd, use_slurm=False)
    _, jobs2, _ = status.collect(str(cfg), workdir=wd, use_slurm=False)
    assert _answer(jobs) == _answer(jobs2)
    assert not any(j.unit == "ftwb1-2_seed1" for j in jobs)


def test_group_job_found_by_the_plugins_group_names(tmp_path):
    """The plugin names a group job <group>_<rules>: logs in group_<group>_<rules>/, comment
    rule_<group>_<rules>; the newest job of the group is the one shown."""
    from ftlab.registry import slurmjobs

    logs = tmp_path / "slurm_logs"
    for rel in (
        "group_data_cities_task_split/120.log",
        "group_data_cities_mixture_multitask_task_split/131.log",
        "group_database_x/140.log",  # another group whose name starts the same
        "rule_train_base/base_seed1/125.log",
    ):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_text("")
    latest = slurmjobs.latest_by_key(logs, use_slurm=False)
    assert slurmjobs.group_job(latest, "data").job_id == "131"
    assert slurmjobs.group_job(latest, "report") is None
    assert latest[slurmjobs.job_key("train_base", {"model": "base_seed1"})].job_id == "125"


def test_grouped_jobs_found_by_their_group_job(tmp_path):
    """The data rules run as one SLURM job (rules/data.smk group "data"): status finds it for
    each of them, although the DAG it builds has no cluster executor (Snakemake's job.group
    is None there); a job of a grouped rule that ran alone is found by its rule and wildcards."""
    wd = tmp_path / "wd"
    wd.mkdir()
    grouped, alone = tmp_path / "grouped", tmp_path / "alone"
    for rel in (
        "grouped/group_data_cities_eval_sets_mixture_multitask_task_split/301.log",
        "grouped/rule_train_base/base_seed1/302.log",
        "alone/rule_cities/303.log",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    _, jobs, _ = status.collect(str(TINY), workdir=wd, use_slurm=False, slurm_logdir=grouped)
    k = by_key(jobs)
    data = [j for j in jobs if j.rule in ("cities", "task_split", "mixture", "eval_sets")]
    assert len(data) == 1 + 14 + 3 + 1 and {j.slurm.job_id for j in data} == {"301"}
    assert k[("train_base", "base_seed1", None)].slurm.job_id == "302"
    assert k[("evaluate", "base_seed1", 44)].slurm is None
    _, jobs, _ = status.collect(str(TINY), workdir=wd, use_slurm=False, slurm_logdir=alone)
    assert by_key(jobs)[("cities", "(study)", None)].slurm.job_id == "303"


def test_queued_jobs_of_another_study_are_not_this_ones(tmp_path, monkeypatch):
    """A pending job has no log yet, so squeue is all status knows of it: only jobs submitted
    from this study's work dir count, though another study queues the same rule+wildcards."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    key = "rule_train_base_wildcards_base_seed1"
    squeue = f"101|PENDING|0:00|{there}|{key}\n102|RUNNING|1:05|{here}|{key}\n"
    monkeypatch.setattr(slurmjobs, "_run", lambda cmd: squeue if cmd[0] == "squeue" else "")
    assert set(slurmjobs.queued_jobs()) == {"101", "102"}
    mine = slurmjobs.queued_jobs(here)
    assert list(mine) == ["102"] and (mine["102"].key, mine["102"].state) == (key, "RUNNING")
    latest = slurmjobs.latest_by_key(here / ".snakemake/slurm_logs", workdir=here)
    assert [j.job_id for j in latest.values()] == ["102"]
