"""Wall time of the tiny test study under the local SLURM cluster vs the local executor, and
the number of SLURM submissions the demo and the paper config would make.

    python benchmarks/slurm_vs_local.py [--skip-runs]

Runs (one after the other, each in its own temp dir) `snakemake --cores 2` and
`snakemake --profile slurm --workflow-profile tests/slurm_profile` (the test's 1 s first poll)
on tests/config_tiny.yaml and prints both times and their ratio, and the machine load. Then
dry-runs config/config.yaml and config/experiments/paper_exp1.yaml under the profile: SLURM
jobs are all jobs but the rules that run in the head process (`all`); a group job (profile
and rules' `group:`) is one sbatch call, an array job one per array_limit tasks.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ftlab.slurm import read_profile  # noqa: E402

TINY = REPO / "tests/config_tiny.yaml"
HEAD_RULES = {"all"}  # no action: Snakemake finishes them in the head process, no sbatch
PROFILE = ["--profile", "slurm", "--workflow-profile", str(REPO / "tests/slurm_profile")]


def snakemake(workdir: Path, configfile: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), *args]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return out.stdout + out.stderr


def timed(workdir: Path, *args: str) -> float:
    start = time.perf_counter()
    snakemake(workdir, TINY, *args)
    return time.perf_counter() - start


def job_stats(configfile: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        log = snakemake(Path(tmp), configfile, "-n", "--quiet", "rules", "--cores", "1")
    block = log.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", block, re.M)}


def submissions(configfile: Path) -> tuple[int, int, int]:
    """(SLURM jobs, sbatch calls, group jobs) of a dry run under the profile: a group job is
    one sbatch however many jobs it runs; other jobs one each (array rules: one per
    array_limit tasks)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = snakemake(Path(tmp), configfile, "-n", *PROFILE)
    grouped = re.findall(r"^    rule (\w+):$", log, re.M)
    alone = [r for r in re.findall(r"^rule (\w+):$", log, re.M) if r not in HEAD_RULES]
    groups = len(re.findall(r"^\[.*\] Group job \w+", log, re.M))
    profile = read_profile(REPO / "slurm")
    array_rules = {r.strip() for r in (profile.get("slurm-array-jobs") or "").split(",") if r}
    limit = int(profile.get("slurm-array-limit") or 1000)
    per_rule: dict[str, int] = {}
    for r in alone:
        per_rule[r] = per_rule.get(r, 0) + 1
    calls = groups + sum(
        math.ceil(n / limit) if (r in array_rules or "all" in array_rules) and n > 1 else n
        for r, n in per_rule.items()
    )
    return len(grouped) + len(alone), calls, groups


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-runs", action="store_true", help="only the dry-run counts")
    args = parser.parse_args()
    if not args.skip_runs:
        print("load before:", uptime())
        with tempfile.TemporaryDirectory() as tmp:
            local = timed(Path(tmp) / "local", "--cores", "2")
            slurm = timed(Path(tmp) / "slurm", *PROFILE)
        print("tiny study (tests/config_tiny.yaml), wall time, one run each, same machine:")
        print(f"  local executor (--cores 2):   {local:7.1f} s")
        print(f"  local SLURM (--profile slurm): {slurm:7.1f} s")
        print(f"  ratio SLURM / local:           {slurm / local:7.2f}")
        print("load after:", uptime())
    print("SLURM submissions (dry run under --profile slurm; a group job is one sbatch):")
    for config in (REPO / "config/config.yaml", REPO / "config/experiments/paper_exp1.yaml"):
        stats = job_stats(config)
        jobs, calls, groups = submissions(config)
        per_rule = ", ".join(f"{r} {n}" for r, n in stats.items() if r not in HEAD_RULES)
        print(
            f"  {config.relative_to(REPO)}: {jobs} jobs in {calls} sbatch calls "
            f"({groups} group jobs; {per_rule})"
        )


if __name__ == "__main__":
    main()
