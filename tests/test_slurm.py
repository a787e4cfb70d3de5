"""SLURM: the tiny study through `--profile slurm` on a real (local) cluster, a training job
cancelled with scancel and resumed, and `ftlab submit`'s preflight error without sbatch.

The cluster tests skip themselves when `sinfo -h` fails (no cluster: see .ci/run, which starts
/work/shared/slurm/start-local-slurm.sh). Each SLURM run is paired with a local run of the same
thing, started at the same time, as the reference its results must equal.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ftlab import cli
from ftlab.io import checkpoint_sha256
from ftlab.kinds import get_kind

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/config_tiny.yaml"
# The user-facing profile exactly as typed, plus the test's polling overrides.
PROFILE = ["--profile", "slurm", "--workflow-profile", str(REPO / "tests/slurm_profile")]
# A base training slow enough (~900 steps, ~30 s) to be cancelled after its first checkpoint;
# a second --configfile is merged into the first (--config would pass nested values as strings).
SLOW_BASE = "pretrain: {epochs: 20, save_every: 50, log_every: 50}\n"


def _cluster_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_cluster = pytest.mark.skipif(
    not _cluster_up(), reason="no SLURM cluster (`sinfo -h` failed); .ci/run starts one"
)


def _env() -> dict:
    # SLURM jobs inherit this environment (--export=ALL): the venv's snakemake/python first.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start(workdir: Path, *args: str, configfiles: tuple = (TINY,)) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", *map(str, configfiles), *args]  # fmt: skip
    log = open(workdir.parent / f"{workdir.name}.log", "w")  # noqa: SIM115 (closed by finish)
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(60)
    proc.stdout.close() if proc.stdout else None
    text = Path(proc.args[proc.args.index("-d") + 1] + ".log").read_text()
    assert proc.returncode == 0, text[-6000:]
    return text


def sacct(run_id: str, since: str) -> pd.DataFrame:
    """One row per SLURM job (array tasks as N_i) whose job name is this run's id (the plugin
    names jobs by run; the local cluster does not store job comments)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-S", since, "--name", run_id,
         "-o", "JobID,State,Timelimit,AllocCPUS,Submit,End"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("|") for line in out.splitlines() if line]
    return pd.DataFrame(rows, columns=["job", "state", "timelimit", "cpus", "submit", "end"])


def run_ids(log: str) -> list[str]:
    return re.findall(r"SLURM run ID: (\S+)", log)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny study under SLURM and locally, side by side."""
    root = tmp_path_factory.mktemp("slurm")
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    slurm = start(root / "slurm", *PROFILE)
    local = start(root / "local", "--cores", "1")  # leaves the 2-CPU node to the SLURM jobs
    slurm_log, _ = finish(slurm), finish(local)
    return root, slurm_log, since


@needs_cluster
def test_tiny_study_runs_as_slurm_jobs(runs):
    root, log, since = runs
    [run_id] = run_ids(log)
    jobs = sacct(run_id, since)
    planned = int(re.search(r"^total\s+(\d+)$", log, re.M)[1]) - 1  # `all` runs in the head
    stats = log.split("Job stats:")[1].split("total")[0]
    per_rule = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)}
    data = sum(per_rule[r] for r in ("cities", "task_split", "multitask", "mixture", "eval_sets"))
    assert data == 1 + 14 + 1 + 3 + 1
    # the report (tables, 4 plots) runs in the head process, not as SLURM jobs (local rules,
    # the kind's report_rules, ftlab.slurm.report_in_head), and says so in the log
    report = get_kind("worldmodel").report_rules
    in_head = [r for r in re.findall(r"^localrule (\w+):$", log, re.M) if r != "all"]
    assert sorted(in_head) == sorted(r for r in report for _ in range(per_rule[r])), in_head
    assert len(in_head) == 5, in_head
    # the data rules run as one group job (rules/data.smk group "data"), every other job alone
    assert len(jobs) == planned - data + 1 - len(in_head), jobs
    assert (jobs.state == "COMPLETED").all(), jobs[jobs.state != "COMPLETED"]
    # the group job asks the profile's group_cpus (2, the node's CPUs), not its 20 members'
    # sum; every other job of the tiny study asks 1 CPU (threads: 1)
    assert sorted(jobs.cpus.astype(int)) == [1] * (len(jobs) - 1) + [2], jobs
    # every ready job is queued at once (cpu_slots is scoped local, not a global cap of 2):
    # after the base model, its 3 fine-tunes, evaluation and probe are in the queue together
    events = sorted([(t, 1) for t in jobs.submit] + [(t, -1) for t in jobs.end])
    in_queue = [sum(d for _, d in events[: i + 1]) for i in range(len(events))]
    assert max(in_queue) >= 5, jobs
    # one Snakemake per job, in its batch step (ftlab.slurm.run_jobs_in_batch_step): no srun
    # step (N.0) started a second one
    steps = subprocess.run(
        ["sacct", "-n", "-P", "-j", ",".join(jobs.job), "-o", "JobID"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert any(s.endswith(".batch") for s in steps), steps
    assert not [s for s in steps if re.fullmatch(r"\d+\.\d+", s)], steps


@needs_cluster
def test_slurm_tables_equal_local(runs):
    root, _, _ = runs
    tables = sorted((root / "local/results/tiny/tables").glob("*.csv"))
    assert len(tables) == 4
    for local in tables:
        remote = pd.read_csv(root / "slurm/results/tiny/tables" / local.name)
        pd.testing.assert_frame_equal(remote, pd.read_csv(local), check_exact=True)


@needs_cluster
def test_cancelled_training_is_retried_and_resumes(runs):
    """scancel a running base training: the retry (attempt 2, longer time limit) resumes from
    its last checkpoint, and the published model equals an uninterrupted run's."""
    root, _, _ = runs
    target = "results/tiny/models/base_seed1"
    slow = root / "slow_base.yaml"
    slow.write_text(SLOW_BASE)
    args = [target, "--forcerun", "train_base"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    slurm = start(root / "slurm", *PROFILE, *args, configfiles=(TINY, slow))
    # the uninterrupted reference
    local = start(root / "local", "--cores", "1", *args, configfiles=(TINY, slow))
    state = root / "slurm/results/tiny/train_state/base_seed1"
    job_id = None
    deadline = time.time() + 240
    while time.time() < deadline and slurm.poll() is None:
        found = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%A %k"],
                               capture_output=True, text=True).stdout  # fmt: skip
        ids = [ln.split()[0] for ln in found.splitlines() if "rule_train_base" in ln]
        if ids and glob.glob(str(state / "checkpoint-*")):
            job_id = ids[0]
            break
        time.sleep(0.5)
    assert job_id, "the training job never wrote a checkpoint while running"
    subprocess.run(["scancel", job_id], check=True)
    log = finish(slurm)
    finish(local)

    assert f"SLURM-job '{job_id}' failed" in log
    [run_id] = run_ids(log)
    jobs = sacct(run_id, since)
    # attempt 1 was cancelled (sacct: "CANCELLED by <uid>"), attempt 2 completed
    assert [s.split()[0] for s in jobs.state] == ["CANCELLED", "COMPLETED"], jobs
    first, second = jobs.timelimit
    assert second > first  # runtime grows with the attempt (lexical compare of HH:MM:SS)
    train_log = (root / "slurm/results/tiny/logs/train/base_seed1.log").read_text()
    step = int(re.search(r"resuming from step (\d+)", train_log)[1])
    assert step > 0
    # Nothing of the cancelled attempt was published: the model is complete, state is gone,
    # and every checkpoint equals the uninterrupted run's, bit for bit.
    assert not state.exists()
    ckpts = sorted(p.name for p in (root / "slurm" / target).glob("checkpoint-*"))
    assert ckpts == sorted(p.name for p in (root / "local" / target).glob("checkpoint-*"))
    for name in ckpts:
        assert checkpoint_sha256(root / "slurm" / target / name) == checkpoint_sha256(
            root / "local" / target / name
        )


def test_submit_without_sbatch_says_so(tmp_path, monkeypatch, capsys):
    """No cluster needed: PATH without sbatch gives the clear error, not a traceback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sinfo", "sacctmgr"):  # other SLURM tools present makes no difference
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.main(["submit", "--", "-n"]) == 2
    err = capsys.readouterr().err
    assert "SLURM requested but sbatch not found" in err


def test_workflow_without_sbatch_fails_before_any_job(tmp_path):
    """`snakemake --profile slurm` where sbatch is missing stops at onstart, naming the cause."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("which", "bash", "sh"):  # the SLURM plugin runs `which` when imported
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(bin_dir)])}
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
         "-d", str(tmp_path / "w"), "--configfile", str(TINY), "--profile", "slurm"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0
    assert "SLURM requested but sbatch not found" in out.stdout + out.stderr
    assert not (tmp_path / "w/results").exists()


def test_submit_names_a_rejected_partition(tmp_path, monkeypatch, capsys):
    profile = tmp_path / "prof"
    profile.mkdir()
    (profile / "config.yaml").write_text(
        "executor: slurm\ndefault-resources:\n  slurm_partition: nosuchpartition\n"
    )
    if not _cluster_up():
        pytest.skip("needs sinfo to reject the partition")
    assert cli.main(["submit", "--profile", str(profile), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "partition 'nosuchpartition'" in err and "SITE SETTINGS" in err


def test_status_checks_capped_at_seconds_between_status_checks(monkeypatch):
    """The plugin's own check (no active jobs: wait init_seconds_before_status_checks, 40 s
    here; after checks that find nothing finished it grows by 10 s) is capped at the
    profile's seconds-between-status-checks once the workflow bounds it."""
    import asyncio
    import logging
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm import Executor

    from ftlab.slurm import bound_status_interval

    monkeypatch.setattr(Executor, "check_active_jobs", Executor.check_active_jobs)
    executor = object.__new__(Executor)  # only what check_active_jobs reads
    executor._next_seconds_between_status_checks = None
    executor.logger = logging.getLogger("test")
    settings = SimpleNamespace(seconds_between_status_checks=2)
    executor.workflow = SimpleNamespace(
        executor_settings=SimpleNamespace(init_seconds_before_status_checks=40),
        remote_execution_settings=settings,
    )

    async def check():
        return [j async for j in Executor.check_active_jobs(executor, [])]

    assert asyncio.run(check()) == []
    assert executor.next_seconds_between_status_checks == 40  # the plugin alone
    assert bound_status_interval(SimpleNamespace(remote_execution_settings=settings)) == 2
    assert asyncio.run(check()) == []
    assert executor.next_seconds_between_status_checks == 2


def test_jobs_run_in_their_batch_step_unless_arrays(monkeypatch):
    """The plugin's job command names its jobstep executor (a second Snakemake through srun);
    once the workflow applies run_jobs_in_batch_step it names none (the job's own Snakemake,
    local executor), except for array jobs, which the jobstep executor dispatches."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm import Executor

    from ftlab.slurm import run_jobs_in_batch_step

    monkeypatch.setattr(Executor, "additional_general_args", Executor.additional_general_args)
    executor = object.__new__(Executor)  # only what additional_general_args reads
    executor.workflow = SimpleNamespace(
        executor_settings=SimpleNamespace(pass_command_as_script=False)
    )
    executor.array_jobs = set()
    assert "--executor slurm-jobstep" in executor.additional_general_args()  # the plugin alone
    assert run_jobs_in_batch_step({"FTLAB_SLURM_SRUN_STEP": "1"}) is False  # opted out
    assert "--executor slurm-jobstep" in executor.additional_general_args()
    assert run_jobs_in_batch_step({}) is True
    assert run_jobs_in_batch_step({}) is True  # applied once
    assert executor.additional_general_args() == ""
    executor.array_jobs = {"evaluate"}
    assert "--executor slurm-jobstep" in executor.additional_general_args()


def test_profile_keys_are_snakemake_options():
    """Every key of the shipped profile and the test overrides is a Snakemake (or SLURM
    plugin) option: Snakemake silently ignores a mapping under a key that names no option
    (`resource-scopes:` for --set-resource-scopes left cpu_slots a global cap, so at most 2
    SLURM jobs were queued at once for any study)."""
    import yaml
    from snakemake.cli import get_argument_parser

    from ftlab.slurm import read_profile

    options = {s[2:] for a in get_argument_parser()._actions for s in a.option_strings}
    workflow_profile = yaml.safe_load((REPO / "tests/slurm_profile/config.yaml").read_text())
    for profile in (read_profile(REPO / "slurm"), workflow_profile):
        assert set(profile) - options == set()
    assert read_profile(REPO / "slurm")["set-resource-scopes"] == {"cpu_slots": "local"}


def test_every_rule_that_may_ask_for_gpus_is_a_gpu_rule():
    """A rule whose resources carry the study's GPU count (gpus(...), job_shape(...), a
    launch plan's resources or the teacher's) gets the profile's GPU partition, gpu_model and
    gpu_extra only when listed in gpu_rules: train_tir and tir_generate were left out, so a
    TIR study's GPU jobs went to the CPU partition. `represent` is left out on purpose (the
    profile says so: add it when giving it GPUs)."""
    import yaml

    text = (REPO / "slurm/config.yaml").read_text()
    listed = set(yaml.safe_load(re.search(r"^  gpu_rules: (.*)$", text, re.M)[1]))
    asking = set()
    for smk in (REPO / "rules").glob("*.smk"):
        blocks = r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^rule |^checkpoint |\Z)"
        for name, body in re.findall(blocks, smk.read_text(), re.M | re.S):
            res = body.split("resources:", 1)[1] if "resources:" in body else ""
            if re.search(
                r"gpus\(|job_shape\(|_JOB\[1\]|\w_resources\(", res.split("params:", 1)[0]
            ):
                asking.add(name)
    assert "train_tir" in asking and "tir_generate" in asking and "train_base" in asking
    assert asking - {"represent"} == listed


def test_submit_validates_the_study_config_before_sbatch(tmp_path, capsys):
    """A missing or invalid config is refused at submission, naming the file and the key; not
    found in the head job's log after its time in the queue."""
    from ftlab.slurm import configfiles_in

    assert configfiles_in(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2"]) == [
        "a.yaml", "b.yaml"]  # fmt: skip
    assert configfiles_in(["--configfile=a.yaml", "t.png"]) == ["a.yaml"]
    assert configfiles_in(["all"]) == []
    missing = str(tmp_path / "nope.yaml")
    assert cli.main(["submit", "--dry-run", "--", "--configfile", missing]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\npretrain: {batch_size: 0}\n")
    assert cli.main(["submit", "--dry-run", "--", "--configfile", str(bad)]) == 2
    assert "config key 'pretrain.batch_size'" in capsys.readouterr().err
    # a later file may override part of an earlier one (merged, as Snakemake does)
    part = tmp_path / "part.yaml"
    part.write_text("pretrain: {epochs: 2}\n")
    cmd = ["submit", "--dry-run", "--", "--configfile", str(TINY), str(part)]
    if shutil.which("sbatch"):
        assert cli.main(cmd) == 0
        assert "sbatch" in capsys.readouterr().out
    else:  # the config passes; what stops it is the missing sbatch
        assert cli.main(cmd) == 2
        assert "sbatch not found" in capsys.readouterr().err
