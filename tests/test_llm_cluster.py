"""Cluster caps from the SLURM profile's site block (max_mem_mb, max_gpus -> Snakemake's global
resources, which bound the jobs it keeps queued, running + pending): a dry run of seed 003's
study under the profile asks no job for more than the caps, and says which config key was
lowered."""

import re
import subprocess
import sys
from pathlib import Path

from ftlab.slurm import read_profile

REPO = Path(__file__).resolve().parents[1]


def _profile(tmp_path, mem, gpus):
    text = (REPO / "slurm/config.yaml").read_text()
    text = text.replace("  max_mem_mb: null", f"  max_mem_mb: {mem}")
    text = text.replace("  max_gpus: null", f"  max_gpus: {gpus}")
    prof = tmp_path / "prof"
    prof.mkdir()
    (prof / "config.yaml").write_text(text)
    return prof


def test_site_caps_become_global_resources(tmp_path):
    # no caps unless the site sets them (cpu_slots is the group jobs' width, not a cap)
    shipped = read_profile(REPO / "slurm")["resources"]
    assert not {"mem_mb", "gpu"} & set(shipped)
    capped = read_profile(_profile(tmp_path, 96000, 4))
    assert capped["resources"] == {**shipped, "mem_mb": 96000, "gpu": 4}
    # mem_mb is scoped local by Snakemake (a bound per job only) unless the profile scopes it
    # global; gpu is global by default
    scopes = read_profile(REPO / "slurm")["set-resource-scopes"]
    assert "mem_mb" not in scopes
    assert capped["set-resource-scopes"] == {**scopes, "mem_mb": "global"}


def _dry_run(tmp_path, prof, configfile):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", str(prof), "--configfile",
         str(configfile), "-d", str(tmp_path / "w")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_memory_cap_honoured_in_a_dry_run_under_the_profile(tmp_path):
    prof = _profile(tmp_path, 50000, 2)
    out = _dry_run(tmp_path, prof, REPO / "config/experiments/forgetting_qwen3_1.7b.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    mems = [int(m) for m in re.findall(r"resources: .*?\bmem_mb=(\d+)", text)]
    gpus = [int(g) for g in re.findall(r"resources: .*?\bgpu=(\d+)", text)]
    assert len(mems) > 100 and max(mems) == 50000  # train asked 64000, the teacher 96000
    assert gpus and max(gpus) == 2  # the teacher's 2, within the cap
    assert "config resources.train.mem_mb = 64000 is above the cluster cap 50000" in text


def test_a_job_asking_more_gpus_than_the_cap_is_refused_naming_the_key(tmp_path):
    """Snakemake would lower a 2-node x 2-GPU job's gpu=4 to a cap of 3 without a word, and
    the job would start 4 processes on 3 GPUs: refused before anything runs, naming the keys."""
    import yaml

    cfg = yaml.safe_load((REPO / "config/experiments/forgetting_qwen3_1.7b.yaml").read_text())
    cfg["resources"]["train"].update(gpus=2, nodes=2)
    configfile = tmp_path / "two_nodes.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    out = _dry_run(tmp_path, _profile(tmp_path, 96000, 3), configfile)
    assert out.returncode != 0
    expected = ("config resources.train.gpus x resources.train.nodes = 4 GPUs per job is above "
                "the cluster cap 3 (slurm/config.yaml max_gpus)")  # fmt: skip
    assert expected in out.stdout + out.stderr
