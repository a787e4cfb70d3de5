"""Time of `ftlab status` and of the results index at 1x and 10x the paper's exp1 matrix.

    python benchmarks/status_scale.py [--mult 1,10]

For each size (87 and 870 models: paper_exp1.yaml with 3 and 30 seeds) in a fresh empty work
dir: `status.collect` (Snakemake's DAG in-process + disk + SLURM when present) and rendering;
then a synthetic results tree of that size (15 eval sets per model, written in the
evaluations' own shapes) and the index: full build, no-change refresh, leaderboard query.
Prints wall times and the machine load (`uptime`): figures, not assertions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ftlab.registry import index, status, synthetic, views  # noqa: E402
from ftlab.registry.store import Registry  # noqa: E402

SETS = [
    f"{t}__{v}"
    for t in ("distance", "trianglearea", "angle", "compass", "inside", "perimeter", "crossing")
    for v in ("no_atlantis", "atlantis_required")
]


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def write_results(study: Path, models: set[str]) -> None:
    for m in sorted(models):
        for s in SETS:
            synthetic.world_eval(study, m, 100, s, "mae", [1.0, 2.0])


def board(results: Path) -> list[dict]:
    with Registry(results) as reg:
        return views.leaderboard(reg, "mae")


def measure(mult: int, base: dict, tmp: Path) -> None:
    cfg = dict(base, seeds=list(range(1, 3 * mult + 1)), study=f"scale{mult}")
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    t_status, (c, jobs, rules) = timed(status.collect, str(tmp / "cfg.yaml"), workdir=tmp)
    t_render, _ = timed(status.render, c, jobs, rules)
    models = {j.unit for j in jobs if j.unit != "(study)"}
    print(
        f"{len(models)} models, {len(jobs)} jobs: ftlab status {t_status:.1f} s "
        f"(+ render {t_render:.2f} s)"
    )
    study = tmp / "results" / f"scale{mult}"
    t_write, _ = timed(write_results, study, models)
    t_build, n = timed(index.refresh, study)
    t_noop, _ = timed(index.refresh, study)
    t_board, rows = timed(board, tmp / "results")
    print(
        f"  index of {n['updated']} result files: build {t_build:.2f} s, refresh with "
        f"nothing changed {t_noop:.2f} s, leaderboard ({len(rows)} runs, refresh included) "
        f"{t_board:.2f} s  [writing the files took {t_write:.1f} s]"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mult", default="1,10")
    args = p.parse_args()
    base = yaml.safe_load((REPO / "config/experiments/paper_exp1.yaml").read_text())
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    for mult in [int(m) for m in args.mult.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            measure(mult, base, Path(tmp))
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
