"""Wall time of the tiny test study under the local SLURM cluster vs the local executor, and
the number of SLURM submissions the demo and the paper config would make.

    python benchmarks/slurm_vs_local.py [--skip-runs] [--repeat N]

Runs (one after the other, each in its own temp dir) `snakemake --cores 2` and
`snakemake --profile slurm --workflow-profile tests/slurm_profile` (the test's 1 s first poll)
on tests/config_tiny.yaml and prints both times and their ratio, and the machine load. Then
dry-runs config/config.yaml and config/experiments/paper_exp1.yaml under the profile: SLURM
jobs are all jobs but the rules that run in the head process (`all`, the tables and plots);
a group job (profile and rules' `group:`) is one sbatch call, an array job one per
array_limit tasks.

After the SLURM run it prints where the time went, per rule family, from `sacct` (submit,
start, end; 1 s resolution) and the jobs' benchmark files (the script's own seconds): the wait
from sbatch to start, the job's run time and, of that, what is not the script (the job-side
Snakemake start-up: one Snakemake as the batch script runs the job, ftlab.slurm.
run_jobs_in_batch_step; the plugin alone starts a second one through srun), and the delay
from one job's end to the next sbatch (polling).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ftlab.kinds import get_kind  # noqa: E402
from ftlab.slurm import read_profile, report_in_head  # noqa: E402

TINY = REPO / "tests/config_tiny.yaml"
# Rules that run in the head process, no sbatch: `all` (no action) and the report's tables and
# plots (local rules, ftlab.slurm.report_in_head). A dry run does not tell them apart.
HEAD_RULES = {"all"} | (set(get_kind("worldmodel").report_rules) if report_in_head() else set())
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


def timed(workdir: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    log = snakemake(workdir, TINY, *args)
    return time.perf_counter() - start, log


def family(name: str) -> str:
    """Rule family of a plugin log folder (rule_train_base, group_data_...) or a benchmark
    file's first path part (train, plots, task_split.tsv ...)."""
    name = name.removeprefix("rule_").removesuffix(".tsv")
    if name.startswith("group_data") or name in {"cities", "task_split", "mixture", "multitask"}:
        return "data"
    for fam in ("train", "plot", "evaluate", "represent", "tables"):
        if name.startswith(fam):
            return "plots" if fam == "plot" else fam
    return name


def script_seconds(workdir: Path) -> dict[str, float]:
    """Seconds of the jobs' scripts (Snakemake `benchmark:` files), summed per family."""
    out: dict[str, float] = {}
    root = workdir / "results/tiny/benchmarks"
    for f in root.rglob("*.tsv"):
        fam = family(f.relative_to(root).parts[0])
        out[fam] = out.get(fam, 0.0) + float(f.read_text().splitlines()[-1].split("\t")[0])
    return out


def breakdown(workdir: Path, log: str) -> None:
    """Where a SLURM run's time went, per family (see the module docstring)."""
    from datetime import datetime

    run_id = re.search(r"SLURM run ID: (\S+)", log)[1]
    names = {
        jid: name for name, jid in re.findall(r"slurm_logs/([^/\s]+)/(?:[^/\s]+/)?(\d+)\.log", log)
    }
    out = subprocess.run(["sacct", "-n", "-X", "-P", "--name", run_id, "-o",
                          "JobID,Submit,Start,End,AllocCPUS"],
                         capture_output=True, text=True).stdout  # fmt: skip
    jobs = []
    for line in out.splitlines():
        jid, *times, cpus = line.split("|")
        sub, start, end = (datetime.fromisoformat(x).timestamp() for x in times)
        jobs.append((family(names.get(jid, "?")), sub, start, end, int(cpus)))
    if not jobs:
        print("  (no sacct records for this run)")
        return
    scripts = script_seconds(workdir)
    first = min(j[1] for j in jobs)
    print(f"  where the SLURM run's time went ({len(jobs)} SLURM jobs, sacct 1 s resolution):")
    print(f"    {'family':10} {'jobs':>4} {'wait':>6} {'run':>6} {'script':>7} {'not script':>10}")
    for fam in sorted({j[0] for j in jobs}, key=lambda f: min(j[1] for j in jobs if j[0] == f)):
        sel = [j for j in jobs if j[0] == fam]
        wait = sum(j[2] - j[1] for j in sel) / len(sel)
        run = sum(j[3] - j[2] for j in sel)
        script = scripts.get(fam, 0.0)
        # a group job runs its members side by side on its CPUs: compare CPU-seconds
        slots = sum((j[3] - j[2]) * j[4] for j in sel)
        extra = (slots - script) / len(sel)
        print(f"    {fam:10} {len(sel):4d} {wait:5.1f}s {run:5.1f}s {script:6.1f}s "
              f"{extra:6.1f}s/job")  # fmt: skip
    ends = sorted(j[3] for j in jobs)
    gaps = [j[1] - max(e for e in ends if e <= j[1]) for j in jobs if any(e <= j[1] for e in ends)]
    print(f"    wait: sbatch to start (mean; includes waiting for a free CPU); run: sum of the "
          f"jobs' run times; script: sum of their scripts' seconds; not script: CPU-seconds "
          f"held per job beyond the script. Job end to next sbatch: max {max(gaps):.0f} s; "
          f"last job ended {max(ends) - first:.0f} s after the first sbatch")  # fmt: skip


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
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="pairs of runs (local then SLURM, alternating); the median ratio of the pairs",
    )  # fmt: skip
    args = parser.parse_args()
    ratios = []
    for i in range(0 if args.skip_runs else args.repeat):
        print(f"pair {i + 1} of {args.repeat}, load before:", uptime())
        with tempfile.TemporaryDirectory() as tmp:
            local, _ = timed(Path(tmp) / "local", "--cores", "2")
            print("load between:", uptime())
            slurm, log = timed(Path(tmp) / "slurm", *PROFILE)
            print("load after:", uptime())
            print("tiny study (tests/config_tiny.yaml), wall time, one run each, same machine:")
            print(
                f"  local executor (--cores 2):   {local:7.1f} s "
                f"(scripts {sum(script_seconds(Path(tmp) / 'local').values()):.1f} s in all)"
            )
            print(f"  local SLURM (--profile slurm): {slurm:7.1f} s")
            print(f"  ratio SLURM / local:           {slurm / local:7.2f}")
            ratios.append(slurm / local)
            breakdown(Path(tmp) / "slurm", log)
    if len(ratios) > 1:
        print(f"ratios of the {len(ratios)} pairs: {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}")  # fmt: skip
    print("SLURM submissions (dry run under --profile slurm; a group job is one sbatch):")
    for config in (REPO / "config/config.yaml", REPO / "config/experiments/paper_exp1.yaml"):
        stats = job_stats(config)
        jobs, calls, groups = submissions(config)
        per_rule = ", ".join(f"{r} {n}" for r, n in stats.items() if r not in HEAD_RULES)
        head = ", ".join(f"{r} {n}" for r, n in stats.items() if r in HEAD_RULES - {"all"})
        print(
            f"  {config.relative_to(REPO)}: {jobs} jobs in {calls} sbatch calls "
            f"({groups} group jobs; {per_rule}); in the head process: {head or 'none'}"
        )


if __name__ == "__main__":
    main()
