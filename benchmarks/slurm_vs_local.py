"""Wall time of the tiny test study under the local SLURM cluster vs the local executor, and
the number of SLURM submissions the demo and the paper config would make.

    python benchmarks/slurm_vs_local.py [--skip-runs]

Runs (one after the other, each in its own temp dir) `snakemake --cores 2` and
`snakemake --profile slurm --workflow-profile tests/slurm_profile` (the test's 1 s first poll)
on tests/config_tiny.yaml and prints both times and their ratio. Then dry-runs
config/config.yaml and config/experiments/paper_exp1.yaml: SLURM jobs are all jobs but the
rules that run in the head process (`all`); sbatch calls count an array job once per
array_limit tasks (profile: slurm-array-jobs).
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


def submissions(stats: dict[str, int], array_rules: set[str], array_limit: int) -> tuple[int, int]:
    jobs = {rule: n for rule, n in stats.items() if rule not in HEAD_RULES}
    calls = sum(
        math.ceil(n / array_limit) if (rule in array_rules or "all" in array_rules) and n > 1
        else n
        for rule, n in jobs.items()
    )  # fmt: skip
    return sum(jobs.values()), calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-runs", action="store_true", help="only the dry-run counts")
    args = parser.parse_args()
    if not args.skip_runs:
        with tempfile.TemporaryDirectory() as tmp:
            local = timed(Path(tmp) / "local", "--cores", "2")
            slurm = timed(Path(tmp) / "slurm", *PROFILE)
        print("tiny study (tests/config_tiny.yaml), wall time, one run each, same machine:")
        print(f"  local executor (--cores 2):   {local:7.1f} s")
        print(f"  local SLURM (--profile slurm): {slurm:7.1f} s")
        print(f"  ratio SLURM / local:           {slurm / local:7.2f}")
    profile = read_profile(REPO / "slurm")
    array_rules = {r.strip() for r in (profile.get("slurm-array-jobs") or "").split(",") if r}
    array_limit = int(profile.get("slurm-array-limit") or 1000)
    print(f"SLURM submissions (dry run; array rules: {', '.join(sorted(array_rules)) or 'none'}):")
    for config in (REPO / "config/config.yaml", REPO / "config/experiments/paper_exp1.yaml"):
        stats = job_stats(config)
        jobs, calls = submissions(stats, array_rules, array_limit)
        per_rule = ", ".join(f"{r} {n}" for r, n in stats.items() if r not in HEAD_RULES)
        print(f"  {config.relative_to(REPO)}: {jobs} SLURM jobs, {calls} sbatch calls ({per_rule})")


if __name__ == "__main__":
    main()
