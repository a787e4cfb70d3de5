"""Job shapes under SLURM: a 2-task job (--ntasks-per-node=2) of the tiny study trains the
base model with 2 processes (srun -> one launcher per task -> DDP over gloo) and equals the
local 1-process model within the DDP tolerance; the preflight refuses a plan that no node of
the partition can hold; dry runs under the profile show every job's shape.

The cluster tests skip themselves when `sinfo -h` fails (.ci/run starts the local cluster:
../shared/slurm/start-local-slurm.sh).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_ddp import WEIGHT_ATOL
from test_slurm import PROFILE, REPO, TINY, _env, needs_cluster, sacct, start

from ftlab.slurm import JobShape, SubmitError, check_shapes

MODEL = "results/tiny/models/base_seed1"
DATA = "results/tiny/data/multitask/no_atlantis/train.jsonl"
TWO_TASKS = "resources:\n  train: {processes: 2, tasks_per_node: 2, mem_mb: 1500}\n"


def run(workdir, *args, configfiles=(TINY,), profile=(), timeout=600):
    proc = start(workdir, *profile, *args, configfiles=configfiles)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # A head left running resubmits (retries) and its jobs hold the node for the tests
        # after this one: stop it (SIGTERM: it cancels its jobs) and cancel what it submitted.
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        submitted = re.findall(r"SLURM jobid (\d+)", Path(f"{workdir}.log").read_text())
        if submitted:
            subprocess.run(["scancel", *submitted], check=False)
        raise
    text = Path(f"{workdir}.log").read_text()
    return proc.returncode, text


@needs_cluster
def test_two_task_job_trains_with_two_processes(tmp_path):
    two = tmp_path / "two.yaml"
    two.write_text(TWO_TASKS)
    # data locally (the SLURM part of the test is the training job), then the model twice
    rc, log = run(tmp_path / "w", "--cores", "1", DATA)
    assert rc == 0, log[-3000:]
    rc, log = run(tmp_path / "local", "--cores", "1", MODEL)
    assert rc == 0, log[-3000:]
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True)
    rc, log = run(tmp_path / "w", MODEL, configfiles=(TINY, two), profile=PROFILE)
    assert rc == 0, log[-6000:]
    assert "launcher=accelerate:ddp:1x2" in log and "tasks_per_node=2" in log

    [run_id] = re.findall(r"SLURM run ID: (\S+)", log)
    jobs = sacct(run_id, since.stdout.strip())
    assert list(jobs.state) == ["COMPLETED"], jobs
    alloc = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", jobs.job[0], "-o", "NTasks,AllocCPUS,NNodes"],
        capture_output=True, text=True, check=True,
    ).stdout.split("|")  # fmt: skip
    assert [a.strip() for a in alloc[1:]] == ["2", "1"], alloc  # 2 CPUs (2 x 1), 1 node
    steps = subprocess.run(["sacct", "-n", "-P", "-j", jobs.job[0], "-o", "JobName,NTasks"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert re.search(r"^python3?[^|]*\|2$", steps, re.M), steps  # the srun step: 2 tasks

    train_log = (tmp_path / "w/results/tiny/logs/train/base_seed1.log").read_text()
    assert "rank 0 of 2" in train_log and "srun --nodes=1 --ntasks-per-node=2" in train_log
    out, ref = tmp_path / "w" / MODEL, tmp_path / "local" / MODEL
    ckpts = sorted(p.name for p in ref.glob("checkpoint-*"))
    assert ckpts and ckpts == sorted(p.name for p in out.glob("checkpoint-*"))
    for name in ckpts:
        a, b = (
            load_file(out / name / "model.safetensors"),
            load_file(ref / name / "model.safetensors"),
        )
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=WEIGHT_ATOL, msg=k)


@needs_cluster
def test_preflight_refuses_more_gpus_per_node_than_the_site_has(tmp_path):
    """8 GPUs per node asked where the site block says the nodes have 4: refused at onstart,
    before any job is submitted, naming rule, config key and where the 4 comes from."""
    profile = tmp_path / "prof"
    profile.mkdir()
    text = (REPO / "slurm/config.yaml").read_text()
    text, n = re.subn(r"^  gpus_per_node: null", "  gpus_per_node: 4   ", text, flags=re.M)
    assert n == 1
    (profile / "config.yaml").write_text(text)
    big = tmp_path / "big.yaml"
    big.write_text("resources:\n  train: {gpus: 8}\n")
    rc, log = run(tmp_path / "w", configfiles=(TINY, big), profile=("--profile", str(profile)))
    assert rc != 0
    assert re.search(
        r"rule train_(base|finetune): 8 GPUs per node \(config key 'resources.train.gpus'\)", log
    )
    assert "have 4 (gpus_per_node in slurm/config.yaml (SITE SETTINGS block))" in log
    assert not (tmp_path / "w/results/tiny/data").exists()


@needs_cluster
def test_preflight_uses_sinfo_without_a_site_value():
    # the local cluster has no GPU GRES: sinfo says 0 GPUs per node
    with pytest.raises(
        SubmitError, match=r"rule evaluate_llm: 1 GPUs per node .* have 0 \(sinfo\)"
    ):
        check_shapes([JobShape("evaluate_llm", "evaluate", None, gpus=1)])
    with pytest.raises(SubmitError, match=r"2 nodes \(config key 'resources.train.nodes'\)"):
        check_shapes([JobShape("train_base", "train", "debug", gpus=0, nodes=2)])


LAUNCHED_RULES = ("train_base", "train_finetune", "train_llm")
SEED_CONFIGS = [
    "forgetting_qwen3_1.7b.yaml",
    "simpletir_qwen2.5_7b.yaml",
    "mtl_guru_qwen2.5_7b.yaml",
]


@pytest.mark.parametrize("name", SEED_CONFIGS)
def test_dry_run_under_the_profile_shows_job_shapes(name, tmp_path):
    """No cluster needed: `snakemake -n --profile slurm` of a seed config lists the GPUs of
    every training, teacher and evaluation job, and the launcher (with nodes x processes) of
    every training job."""
    path = REPO / "config/experiments" / name
    if not path.exists():
        pytest.skip(f"{name} not in this checkout")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--configfile",
         str(path), "-d", str(tmp_path)],
        cwd=REPO, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = re.findall(r"^(?:rule|checkpoint) (\w+):\n(.*?)^ *resources: ([^\n]*)$", out.stdout,
                      re.M | re.S)  # fmt: skip
    shapes = {rule: res for rule, _, res in jobs}
    gpu_jobs = {r: res for r, res in shapes.items() if re.search(r"\bgpu=[1-9]", res)}
    assert gpu_jobs, sorted(shapes)  # every seed config trains and evaluates on GPUs
    for rule, res in shapes.items():
        if rule in LAUNCHED_RULES:  # the training rules that run through ftlab.launch
            assert re.search(r"\blauncher=(none|accelerate:\w+:\d+x\d+)", res), (rule, res)
            assert "family=train" in res, (rule, res)
