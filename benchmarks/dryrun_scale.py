"""Dry-run time and peak memory of the paper's exp1 matrix at 1x, 10x and 100x (87, 870 and
8,700 models: paper_exp1.yaml with 3, 30 and 300 seeds), each next to a bare Snakemake
workflow with the same number of jobs.

    python benchmarks/dryrun_scale.py [--mult 1,10,100] [--no-bare] [--profile-mult 10]

Each is `snakemake -n --quiet rules` in a fresh empty work dir (nothing exists: every job is
planned), timed from the outside with GNU time's peak RSS; the bare workflow (one rule, one
input per job) runs right after, so the ratio of the two is comparable under any load.
`--profile-mult M` also runs the ftlab dry run at M x under cProfile and prints where the
time goes: ftlab's own code (the Snakefile, rules/*.smk and src/ftlab: config validation,
STUDY matrix, input/params functions; exclusive time) vs Snakemake and the rest, and the
imports. Prints figures and `uptime`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BARE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))
rule make:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, output) via GNU time."""
    full = ["/usr/bin/time", "-f", "TIME %e %M", *cmd]
    out = subprocess.run(full, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
    wall, kb = re.findall(r"^TIME (\S+) (\d+)$", out.stderr, re.M)[-1]
    return float(wall), int(kb) / 1024, out.stdout + out.stderr


def ftlab_share(cfg: Path, workdir: Path) -> None:
    """cProfile of one dry run: exclusive time in the project's code vs everything else."""
    import pstats

    prof = workdir.parent / "dryrun.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "snakemake", "-n",
           "--quiet", "rules", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(cfg)]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    stats = pstats.Stats(str(prof)).stats
    total = max(ct for (_, _, _, ct, _) in stats.values())
    own = {}
    imports = 0.0
    for (file, _, func), (_, _, tt, ct, _) in stats.items():
        if (
            file.startswith(str(REPO / "src"))
            or file.startswith(str(REPO / "rules"))
            or (file == str(REPO / "Snakefile"))
        ):
            own[f"{Path(file).name}:{func}"] = tt
        if func == "_find_and_load":
            imports = max(imports, ct)
    print(
        f"  profile: {total:.1f} s in all (under cProfile); ftlab's own code "
        f"{sum(own.values()):.2f} s exclusive; imports {imports:.1f} s"
    )
    for name, tt in sorted(own.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {tt:6.2f} s  {name}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mult", default="1,10,100")
    p.add_argument("--no-bare", action="store_true")
    p.add_argument("--profile-mult", type=int, default=None)
    args = p.parse_args()
    base = yaml.safe_load((REPO / "config/experiments/paper_exp1.yaml").read_text())
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load before:", up)
    smk = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"]
    for mult in [int(m) for m in args.mult.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cfg = dict(base, seeds=list(range(1, 3 * mult + 1)), study=f"x{mult}")
            (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
            (tmp / "study").mkdir()
            wall, mb, log = run(
                smk
                + [
                    "-s",
                    str(REPO / "Snakefile"),
                    "-d",
                    str(tmp / "study"),
                    "--configfile",
                    str(tmp / "cfg.yaml"),
                ],
                REPO,
            )
            jobs = int(re.search(r"^total\s+(\d+)$", log, re.M)[1])
            line = f"{mult:>4}x ({3 * 29 * mult} models, {jobs} jobs): {wall:.1f} s, {mb:.0f} MB"
            if not args.no_bare:
                (tmp / "bare").mkdir()
                (tmp / "bare/Snakefile").write_text(BARE.format(n=jobs - 1))
                bwall, bmb, _ = run(smk + ["-d", str(tmp / "bare")], tmp / "bare")
                line += (
                    f"; bare workflow, same job count: {bwall:.1f} s, {bmb:.0f} MB "
                    f"(ratio {wall / bwall:.2f})"
                )
            print(line, flush=True)
    if args.profile_mult:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            m = args.profile_mult
            cfg = dict(base, seeds=list(range(1, 3 * m + 1)), study=f"x{m}")
            (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
            (tmp / "study").mkdir()
            print(f"{m}x under cProfile:")
            ftlab_share(tmp / "cfg.yaml", tmp / "study")
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load after:", up)


if __name__ == "__main__":
    main()
