"""Time of `ftlab status` and of the results index at 1x and 10x the paper's exp1 matrix.

    python benchmarks/status_scale.py [--mult 1,10]

For each size (87 and 870 models: paper_exp1.yaml with 3 and 30 seeds) in a fresh empty work
dir, in the same run: `status.collect` building Snakemake's DAG (what every call did before
the saved plan; `cache=False`), then the call that finds the plan saved by it (the usual
`ftlab status` and every `--watch` refresh) and rendering; both again once a synthetic
results tree of that size exists (15 eval sets per model, written in the evaluations' own
shapes), and the index: full build, no-change refresh, leaderboard query. Each `ftlab
status` process also pays its imports (~1 s; not included). Prints wall times and the
machine load (`uptime`): figures, not assertions.
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
        synthetic.world_eval(study, m, 100, {s: ("mae", [1.0, 2.0]) for s in SETS})


def board(results: Path) -> list[dict]:
    with Registry(results) as reg:
        return views.leaderboard(reg, "mae")


def status_pair(cfg: Path, tmp: Path, what: str):
    t_dag, (c, jobs, rules) = timed(status.collect, str(cfg), workdir=tmp, cache=False)
    t_plan, (c2, jobs2, _) = timed(status.collect, str(cfg), workdir=tmp)
    same = [(j.rule, j.unit, j.step, j.state) for j in jobs] == [
        (j.rule, j.unit, j.step, j.state) for j in jobs2
    ]
    t_render, _ = timed(status.render, c, jobs, rules)
    states = ", ".join(f"{n} {s}" for s, n in sorted(status.counts(jobs).items()))
    print(
        f"  {what}: DAG {t_dag:.1f} s, saved plan {t_plan:.2f} s "
        f"(x{t_dag / t_plan:.0f}; same states: {same}; {states}) + render {t_render:.2f} s"
    )
    return jobs


def measure(mult: int, base: dict, tmp: Path) -> None:
    cfg = dict(base, seeds=list(range(1, 3 * mult + 1)), study=f"scale{mult}")
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    print(f"{3 * 29 * mult} models, ftlab status:", flush=True)
    jobs = status_pair(tmp / "cfg.yaml", tmp, "nothing run")
    models = {j.unit for j in jobs if j.unit != "(study)"}
    study = tmp / "results" / f"scale{mult}"
    t_write, _ = timed(write_results, study, models)
    status_pair(tmp / "cfg.yaml", tmp, "evaluation files written")
    t_build, n = timed(index.refresh, study)
    t_noop, _ = timed(index.refresh, study)
    t_board, rows = timed(board, tmp / "results")
    print(
        f"  index of {n['updated']} result files: build {t_build:.2f} s, refresh with "
        f"nothing changed {t_noop:.2f} s, leaderboard ({len(rows)} runs, refresh included) "
        f"{t_board:.2f} s  [writing the files took {t_write:.1f} s]",
        flush=True,
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
