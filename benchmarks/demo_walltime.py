"""Wall time of a whole study from scratch: `snakemake --cores all` in a fresh temp directory.

    python benchmarks/demo_walltime.py [--configfile F.yaml] [--cores all] [--dry-run] [--keep]

Runs `snakemake -s <repo>/Snakefile -d <tmp> --cores all` (the embedded default study unless
--configfile is given), so nothing under the repository's results/ is reused or touched, and
prints the wall time of the whole command (start-up, DAG, every job) and the number of jobs it
ran. --dry-run adds -n (plans the same DAG, runs nothing: a quick check that it starts);
--keep leaves the working directory in place and prints its path.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configfile", help="study config (default: config/config.yaml)")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--dry-run", action="store_true", help="pass -n to snakemake")
    parser.add_argument("--keep", action="store_true", help="keep the temp working directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ftlab_walltime_"))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", args.cores]
    if args.configfile:
        cmd += ["--configfile", str(Path(args.configfile).resolve())]
    if args.dry_run:
        cmd.append("-n")
    log_path = workdir / "snakemake.log"
    print("command:", " ".join(cmd))
    try:
        with open(log_path, "w") as log:
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
            elapsed = time.perf_counter() - start
        text = log_path.read_text()
        if proc.returncode != 0:
            print(text[-4000:], file=sys.stderr)
            sys.exit(f"snakemake failed (exit {proc.returncode}); log: {log_path}")
        planned = re.search(r"^total\s+(\d+)\s*$", text, re.M)
        done = re.findall(r"^(\d+) of (\d+) steps \(\S+\) done", text, re.M)
        print(f"config:    {args.configfile or 'config/config.yaml (default)'}")
        jobs = f"{planned[1] if planned else 0} planned"
        jobs += f", {done[-1][0]} run" if done else ""
        jobs += " (dry run: nothing run)" if args.dry_run else ""
        print(f"jobs:      {jobs}")
        print(f"wall time: {elapsed:.1f} s (cores {args.cores})")
    finally:
        if args.keep:
            print(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
