"""Dry-run time of a study's DAG vs a bare Snakemake workflow with the same number of jobs.

    python benchmarks/dryrun_overhead.py [CONFIG] [--repeat 3]

Prints the median wall time of `snakemake -n` for each, and their ratio: what ftlab's config
validation, study matrix and input functions add on top of Snakemake's own cost.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BARE = """
N = {n}
rule all:
    input: expand("out/{{i}}.txt", i=range(N))
rule make:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout + out.stderr


def job_total(log: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", log, re.M)[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "config", nargs="?", default=str(REPO / "config/experiments/paper_exp1.yaml")
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    smk = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study_cmd = smk + [
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp / "study"),
            "--configfile",
            str(Path(args.config).resolve()),
        ]
        study_times, log = zip(*(timed(study_cmd, REPO) for _ in range(args.repeat)), strict=True)
        n_jobs = job_total(log[0])
        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        (bare_dir / "Snakefile").write_text(BARE.format(n=n_jobs - 1))  # + rule all
        bare_times, bare_log = zip(*(timed(smk, bare_dir) for _ in range(args.repeat)), strict=True)
        assert job_total(bare_log[0]) == n_jobs
    study_t, bare_t = statistics.median(study_times), statistics.median(bare_times)
    print(f"config: {args.config}")
    print(f"jobs in DAG:                 {n_jobs}")
    print(f"ftlab dry run (median of {args.repeat}): {study_t:.2f} s")
    print(f"bare workflow, same jobs:    {bare_t:.2f} s")
    print(f"ratio:                       {study_t / bare_t:.2f}x")


if __name__ == "__main__":
    main()
