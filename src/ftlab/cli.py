"""`ftlab` command line: inspect a study without running Snakemake, or submit it to SLURM.

ftlab validate [CONFIG]     check a config against the schema (exit 2 with the key on error)
                            and the kind's preflight (exit 3 naming each problem)
ftlab plan [CONFIG]         the experiment matrix: models, steps, checkpoints, eval counts
ftlab contract [--study S]  every output path pattern of the file contract
ftlab status|list|show|history|leaderboard|compare|significance|export|stats   the run registry
                            (src/ftlab/registry/cli.py)
"""

from __future__ import annotations

import argparse
import sys

from ftlab import slurm
from ftlab.config import ConfigError, load_config
from ftlab.kinds import get_kind, matrix_of
from ftlab.paths import PATTERNS, Layout
from ftlab.registry import cli as registry_cli

DEFAULT_CONFIG = "config/config.yaml"


def _load(path: str) -> dict:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"ftlab: {path}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args) -> int:
    cfg = _load(args.config)
    summary = matrix_of(cfg).summary()
    kind = get_kind(cfg["kind"])
    if kind.preflight is not None and not args.no_preflight:
        problems = kind.preflight(cfg)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            print(f"ftlab: {args.config}: preflight: {len(problems)} problem(s):\n{lines}",
                  file=sys.stderr)  # fmt: skip
            return 3
        summary += "; preflight passed"
    print(f"{args.config}: valid ({summary})")
    return 0


def cmd_plan(args) -> int:
    print(matrix_of(_load(args.config)).plan())
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
    p.add_argument(
        "--no-preflight",
        action="store_true",
        help="only the schema (skip the kind's preflight: packages, datasets, models)",
    )
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="print the experiment matrix")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("contract", help="print the file contract")
    p.add_argument("--study", default="<study>")
    p.set_defaults(func=cmd_contract)
    slurm.add_parser(sub)
    registry_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.func.__module__ == registry_cli.__name__:
        return registry_cli.run(args.func, args)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
