"""`ftlab` command line: inspect a study without running Snakemake, or submit it to SLURM.

ftlab validate [CONFIG]     check a config against the schema (exit 2 with the key on error)
ftlab plan [CONFIG]         the experiment matrix: models, steps, checkpoints, eval counts
ftlab contract [--study S]  every output path pattern of the file contract
"""

from __future__ import annotations

import argparse
import sys

from ftlab import slurm
from ftlab.config import ConfigError, load_config
from ftlab.llm.study import LLMStudy
from ftlab.paths import PATTERNS, Layout
from ftlab.study import Study

DEFAULT_CONFIG = "config/config.yaml"


def _load(path: str) -> dict:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"ftlab: {path}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args) -> int:
    cfg = _load(args.config)
    if cfg["kind"] == "llm":
        n = len(LLMStudy(cfg).runs)
        print(f"{args.config}: valid (LLM study {cfg['study']!r}, {n} training runs)")
    else:
        n = len(Study(cfg).models)
        print(f"{args.config}: valid (study {cfg['study']!r}, {n} models)")
    return 0


def _plan_llm(cfg: dict) -> int:
    study = LLMStudy(cfg)
    llm = cfg["llm"]
    print(f"LLM study {cfg['study']}: base {llm['base_model']}, seeds {list(study.seeds)}")
    print(f"{'run':<28} {'trainer':<7} {'steps':>6}  evaluated checkpoints")
    for run in study.runs.values():
        print(f"{run.name:<28} {run.trainer:<7} {run.total_steps:>6}  {list(run.eval_steps)}")
    points = study.eval_points()
    print(
        f"\n{len(study.runs)} training jobs, {len(points)} evaluation jobs (base model included), "
        f"each scoring {len(llm['benchmarks'])} benchmarks and {len(study.datasets)} in-domain sets"
    )
    return 0


def cmd_plan(args) -> int:
    cfg = _load(args.config)
    if cfg["kind"] == "llm":
        return _plan_llm(cfg)
    study = Study(cfg)
    sets = study.eval_sets()
    print(f"study {cfg['study']}: seeds {list(study.seeds)}, tasks {list(study.tasks)}")
    header = f"{'model':<18} {'kind':<6} {'trained tasks':<26} {'rows':>9} {'steps':>7}  eval steps"
    print(header)
    print("-" * len(header))
    n_evals = 0
    for m in study.models.values():
        n_evals += len(m.eval_steps) * len(sets)
        trained = "+".join(m.trained_tasks) if m.kind != "base" else "multitask"
        print(
            f"{m.name:<18} {m.kind:<6} {trained:<26} {m.n_rows:>9} {m.total_steps:>7}  "
            f"{list(m.eval_steps)}"
        )
    print(
        f"\n{len(study.models)} training jobs, {n_evals} per-set evaluation results "
        f"({len(sets)} sets per checkpoint), {len(study.models)} representation extractions"
    )
    return 0


def cmd_contract(args) -> int:
    layout = Layout(args.study)
    for name in PATTERNS:
        print(f"{name:<18} {layout.pattern(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a config against the schema")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="print the experiment matrix")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("contract", help="print the file contract")
    p.add_argument("--study", default="<study>")
    p.set_defaults(func=cmd_contract)
    slurm.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
