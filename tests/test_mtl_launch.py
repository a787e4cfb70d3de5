"""The multi-task training rule runs through the multi-GPU launcher (ftlab.launch) like the
other training rules: seed 000's config dry-runs under the SLURM profile with its job shape
(2 GPUs, 32 CPUs, 2 DDP processes), and a world study that asks for several processes is
refused, naming the config keys."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def dry_run(config: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "-n", *args, "--configfile", str(config),
           "-d", str(workdir)]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def test_seed_000_training_jobs_have_its_shape_under_the_slurm_profile(tmp_path):
    out = dry_run(REPO / "config/experiments/mtl_guru_qwen2.5_7b.yaml", tmp_path,
                  "--profile", "slurm")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = re.findall(r"^checkpoint mtl_train:\n(.*?)^ *resources: ([^\n]*)$", out.stdout,
                      re.M | re.S)  # fmt: skip
    assert len(jobs) == 2  # baseline and pcgrad
    for _, res in jobs:
        assert "gpu=2" in res and "cpus_per_task=32" in res, res
        assert "launcher=accelerate:ddp:1x2" in res and "family=train" in res, res


def test_world_objective_refuses_several_processes(tmp_path):
    cfg = yaml.safe_load((REPO / "tests/config_mtl_tiny.yaml").read_text())
    cfg["resources"] = {"train": {"processes": 2}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = dry_run(config, tmp_path / "w")
    assert out.returncode != 0
    assert "'resources.train.gpus' / 'processes' / 'nodes'" in out.stdout + out.stderr
