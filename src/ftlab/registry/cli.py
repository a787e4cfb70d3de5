"""The run-registry subcommands of `ftlab` (added to the parser by ftlab.cli):

ftlab status [CONFIG] [--watch S]        study matrix: done / pending / running / failed
ftlab list [--limit N]                   every trained or evaluated run
ftlab show RUN                           a run's checkpoints, results, training summary and
                                         provenance
ftlab history RUN [--metric M ...]       a run's training curves (training_log.csv), per step
ftlab leaderboard [--metric M] [--task T] runs (or seed groups) ranked by a metric
ftlab compare A B ...                    config differences and metrics side by side
ftlab significance A B --method M        paired test on per-sample outcomes
ftlab export [RUN ...] [-o F.csv|.json|.md|.tex] [--to wandb|mlflow]
ftlab stats                              what the index holds; --rebuild rebuilds it
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from ftlab import stats
from ftlab.registry import index, views
from ftlab.registry.records import ResultFileError
from ftlab.registry.store import Registry, RegistryError

MIN_RESAMPLES = 100  # fewer: percentile ends and p-values are too coarse to report


def _registry(args) -> Registry:
    reg = Registry(args.results, args.study or None)
    for note in reg.notes:
        print(f"warning: {note}", file=sys.stderr)
    return reg


def _common(p) -> None:
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--study", action="append", help="only this study (repeatable; default: all)")


def _warn_unreadable(reg, refs, metric=None, task=None, step="last") -> None:
    """An unreadable result file of a run shown is never skipped silently: it names the file
    and, where it is of a newer checkpoint, the older step the answer fell back to."""
    steps = views.used_steps(reg, refs, metric, task, step)
    for line in reg.unreadable_warnings(refs, steps):
        print(f"warning: {line}", file=sys.stderr)


def cmd_list(args) -> int:
    with _registry(args) as reg:
        rows = views.list_runs(reg)
        cols = [
            "run",
            "seed",
            "checkpoints",
            "evaluated",
            "results",
            "trained_at",
            "wall_s",
            "commit",
        ]
        if not rows:
            print(f"no runs under {args.results}")
            return 0
        print(views.table(rows[: args.limit] if args.limit else rows, cols))
        if args.limit and len(rows) > args.limit:
            print(f"({args.limit} of {len(rows)} runs; --limit 0 lists all)")
    return 0


def cmd_show(args) -> int:
    with _registry(args) as reg:
        print(views.show_run(reg, args.run))
        _warn_unreadable(reg, reg.resolve(args.run))
    return 0


def cmd_history(args) -> int:
    with _registry(args) as reg:
        name, metrics, rows = views.history(reg, args.run, args.metric)
        sys.stdout.write(views.format_history(metrics, rows, args.format))
        _warn_unreadable(reg, reg.resolve(args.run))
    return 0


def cmd_leaderboard(args) -> int:
    with _registry(args) as reg:
        rows = views.leaderboard(
            reg, args.metric, args.task, args.step, args.by, common=not args.all_tasks
        )
        direction = "lower" if views.lower_is_better(args.metric) else "higher"
        what = f"mean over {'tasks matching ' + repr(args.task) if args.task else 'tasks'}"
        print(f"{args.metric} ({direction} is better; {what}; step {args.step})")
        for line in views.format_leaderboard_notes(rows, args.by):
            print(line)
        cols = ["rank", "run", "step", "value", "tasks"]
        cols = cols[:4] + ["sd", "seeds", "tasks"] if args.by == "group" else cols + ["n"]
        if args.all_tasks and any(r["missing"] for r in rows):
            cols.append("missing")
        print(views.table(rows[: args.top] if args.top else rows, cols))
        if args.top and len(rows) > args.top:
            print(f"(top {args.top} of {len(rows)}; --top 0 shows all)")
        # every run: one whose only result file is unreadable is missing from the table
        _warn_unreadable(reg, [r["ref"] for r in reg.runs()], args.metric, args.task, args.step)
    return 0


def cmd_compare(args) -> int:
    with _registry(args) as reg:
        diffs, metric_rows, names = views.compare(reg, args.runs, args.metric, args.step)
        refs = list(dict.fromkeys(ref for spec in args.runs for ref in reg.resolve(spec)))
        steps = views.used_steps(reg, refs, args.metric, None, args.step)
        print("steps used: " + ", ".join(f"{reg.name(r)} {steps.get(r, 'none')}" for r in refs))
        _warn_unreadable(reg, refs, args.metric, None, args.step)
        blind = views.without_config(reg, refs)
        if blind:
            print(
                f"configurations: none recorded for {', '.join(blind)} (no models/<run>/ "
                "checkpoint description or training provenance)"
                + ("; differences among what was recorded:" if diffs else "")
            )
        else:
            print("configuration differences:" if diffs else "configurations: identical")
        if diffs:
            print(views.table(diffs, ["key", *names]))
        print(f"\nmetrics (step {args.step}):")
        print(
            views.table(metric_rows, ["metric", "task", *names, "best"])
            if metric_rows
            else "  no common results"
        )
        winners = views.compare_winners(metric_rows, names)
        if winners:
            print("\nwinner (improvement is positive when better):")
            for w in winners:
                print("  " + views.format_winner(w))
    return 0


def cmd_significance(args) -> int:
    if args.resamples < MIN_RESAMPLES:
        raise RegistryError(f"--resamples must be at least {MIN_RESAMPLES}, got {args.resamples}")
    if not 0 < args.alpha < 1:
        raise RegistryError(f"--alpha must lie strictly between 0 and 1, got {args.alpha}")
    with _registry(args) as reg:
        res = views.significance(
            reg,
            args.a,
            args.b,
            args.metric,
            args.task,
            args.method,
            args.resamples,
            args.seed,
            args.step,
            args.alpha,
            args.min_bootstrap_items,
        )
        for w in res["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        refs = reg.resolve(args.a) + reg.resolve(args.b)
        _warn_unreadable(reg, refs, args.metric, args.task, args.step)
        if args.json:
            import json

            print(json.dumps(res, indent=1))
        else:
            print(views.format_significance(res))
    return 0


EXPORT_SUFFIXES = {".csv": "csv", ".json": "json", ".md": "markdown", ".tex": "latex"}


def export_format(fmt: str | None, output: str | None) -> str:
    """--format, else the output file's extension, else csv; a format that contradicts the
    extension (CSV into x.json) is refused."""
    implied = EXPORT_SUFFIXES.get(Path(output).suffix.lower()) if output else None
    if fmt and implied and fmt != implied:
        raise RegistryError(
            f"--format {fmt} contradicts the extension of {output} ({implied}); change one"
        )
    return fmt or implied or "csv"


def cmd_export(args) -> int:
    fmt = export_format(args.format, args.output)
    with _registry(args) as reg:
        if args.metric:
            reg.check_metric(args.metric, args.task)
        refs = [ref for spec in args.runs for ref in reg.resolve(spec)] or None
        rows = reg.results(args.metric, args.task, refs=refs)
        from ftlab.registry.store import pick_step

        rows = pick_step(rows, args.step)
        _warn_unreadable(reg, refs or [r["ref"] for r in reg.runs()], args.metric, args.task,
                         args.step)  # fmt: skip
        if args.to:
            from ftlab.registry.tracking import export_to

            run_refs = refs or [r["ref"] for r in reg.runs()]
            training = {} if args.no_training else {ref: reg.training(ref) for ref in run_refs}
            print(export_to(args.to, reg, rows, offline=not args.online, training=training))
            return 0
        text = views.export(rows, fmt)
        if args.output:
            from ftlab.io import atomic_write_text

            atomic_write_text(args.output, text)
            print(f"{len(rows)} rows ({fmt}) -> {args.output}")
        else:
            sys.stdout.write(text)
    return 0


def cmd_stats(args) -> int:
    if args.rebuild:
        root = Path(args.results)
        if not root.is_dir():
            raise RegistryError(f"results folder {root} does not exist (pass --results)")
        for study in args.study or sorted(p.name for p in root.iterdir() if p.is_dir()):
            if (root / study / "evals").is_dir() or (root / study / "models").is_dir():
                t0 = time.perf_counter()
                try:
                    n = index.rebuild(root / study)
                except (OSError, sqlite3.Error) as err:
                    raise RegistryError(
                        f"cannot rebuild {index.index_path(root / study)} ({err}); the folder "
                        "must be writable (other commands still answer from the files)"
                    ) from None
                print(
                    f"{study}: rebuilt from {n['updated']} files in "
                    f"{time.perf_counter() - t0:.2f} s"
                )
    with _registry(args) as reg:
        for s in views.registry_stats(reg):
            print(
                f"study {s['study']}: {s['runs']} runs ({s['trained']} trained), "
                f"{s['evaluated_checkpoints']} evaluated checkpoints, {s['results']} metric "
                f"values from {s['result_files']} files, {s['provenance_files']} provenance "
                f"records, {s['training_values']} training values from {s['training_logs']} "
                f"training logs; metrics: {', '.join(s['metrics']) or 'none'}"
            )
            print(f"  index {s['index']} (this refresh: {s['refresh']})")
        for study, path, error in reg.file_errors():
            print(f"  unreadable: {study}/{path}: {error}")
    return 0


def cmd_status(args) -> int:
    from ftlab.registry import status

    use_slurm = {"auto": None, "yes": True, "no": False}[args.slurm]
    if args.config is not None:  # a bad file is one line here, not a Snakemake traceback
        from ftlab.config import ConfigError, load_config

        try:
            load_config(args.config)
        except ConfigError as err:
            print(f"ftlab status: {args.config}: {err}", file=sys.stderr)
            return 2
    while True:
        t0 = time.perf_counter()
        cfg, jobs, rules = status.collect(
            args.config,
            workdir=Path(args.directory),
            use_slurm=use_slurm,
            slurm_logdir=args.slurm_logdir,
        )
        text = status.render(
            cfg, jobs, rules, show_done=not args.problems, max_rows=10**9 if args.all_rows else 200
        )
        if args.watch:
            sys.stdout.write("\033[2J\033[H")  # clear the terminal between refreshes
        print(text)
        print(f"\n({time.perf_counter() - t0:.1f} s; {time.strftime('%H:%M:%S')})")
        if not args.watch:
            return 0
        sys.stdout.flush()
        time.sleep(args.watch)


def _count(text: str) -> int:
    """A row limit: 0 (no limit) or a positive number."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or a positive number, got {n}")
    return n


def _seconds(text: str) -> float:
    """A refresh interval: a positive number of seconds."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not s > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return s


def add_parsers(sub) -> None:
    p = sub.add_parser("status", help="study matrix: done / pending / running / failed")
    p.add_argument(
        "config",
        nargs="?",
        default=None,
        help="study config (default: config/config.yaml, as snakemake)",
    )
    p.add_argument(
        "--watch",
        type=_seconds,
        nargs="?",
        const=30.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 30) until interrupted",
    )
    p.add_argument("--problems", action="store_true", help="hide models whose jobs are all done")
    p.add_argument("--all-rows", action="store_true", help="no 200-row limit on the matrix")
    p.add_argument(
        "--slurm",
        choices=["auto", "yes", "no"],
        default="auto",
        help="ask squeue/sacct (auto: when sinfo answers)",
    )
    p.add_argument(
        "--slurm-logdir",
        default=".snakemake/slurm_logs",
        help="the profile's slurm-logdir, relative to --directory",
    )
    p.add_argument("-d", "--directory", default=".", help="the workflow's working directory")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("list", help="every trained or evaluated run")
    p.add_argument(
        "--limit", type=_count, default=0, help="list only the first N runs (default: all)"
    )
    _common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a run's checkpoints, results and provenance")
    p.add_argument("run", help="model name, <study>/<model>, or a group (all its seeds)")
    _common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("history", help="a run's training curves, one row per logged step")
    p.add_argument("run", help="model name or <study>/<model>")
    p.add_argument(
        "--metric",
        action="append",
        help="a column of its training_log.csv, e.g. loss (repeatable; default: every one)",
    )
    p.add_argument(
        "--format", choices=["csv", "table"], default="csv", help="csv (default) or table"
    )
    _common(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("leaderboard", help="runs ranked by a metric")
    p.add_argument(
        "--metric", default="accuracy", help="e.g. accuracy (default, as seed 001), mae, acc_norm"
    )
    p.add_argument(
        "--task",
        "--benchmark",
        dest="task",
        help="one task (or a glob, e.g. 'angle__*'); default: mean over all. --benchmark: "
        "seed 001's name for it",
    )
    p.add_argument("--step", default="last", help="last (default), all, or a step number")
    p.add_argument(
        "--by", choices=["run", "group"], default="run", help="group: mean and sd over seeds"
    )
    p.add_argument(
        "--top",
        type=_count,
        default=10,
        help="show only the first N (default 10, as seed 001; 0: all)",
    )
    p.add_argument(
        "--all-tasks",
        action="store_true",
        help="each run's mean over its own tasks (default: only the tasks every run has)",
    )
    _common(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("compare", help="config differences and metrics of runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--metric", help="only this metric")
    p.add_argument("--step", default="last")
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("significance", help="paired test of two runs on per-sample outcomes")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--metric", default="accuracy", help="default: accuracy (as seed 001)")
    p.add_argument(
        "--task",
        "--benchmark",
        dest="task",
        help="one task or a glob (default: every task with the metric); --benchmark: seed "
        "001's name for it",
    )
    p.add_argument(
        "--method",
        choices=stats.METHODS,
        default="auto",
        help="auto (default): 0/1 outcomes get the exact McNemar test, with the bootstrap's "
        "interval; other outcomes the paired bootstrap",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=10000,
        help=f"bootstrap / Monte Carlo resamples (at least {MIN_RESAMPLES})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the resampling")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance level; the interval is at 1 - alpha (0 < alpha < 1)",
    )
    p.add_argument("--step", default="last", help="last (default) or a step number")
    p.add_argument(
        "--min-bootstrap-items",
        type=_count,
        default=None,
        metavar="N",
        help=f"a bootstrap-decided result on fewer than N items is never called significant "
        f"(default: {stats.MIN_BOOTSTRAP_N} under --method auto; 0 under --method bootstrap, "
        "seed 001's plain bootstrap; either way a note below "
        f"{stats.MIN_BOOTSTRAP_N})",
    )
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_significance)

    p = sub.add_parser("export", help="results as csv, json, markdown or latex")
    p.add_argument(
        "runs", nargs="*", help="runs or groups to export (default: every run)", metavar="RUN"
    )
    p.add_argument(
        "--format",
        choices=["csv", "json", "markdown", "latex"],
        help="default: from the --output extension (.csv .json .md .tex), else csv",
    )
    p.add_argument("--metric")
    p.add_argument("--task", "--benchmark", dest="task")
    p.add_argument("--step", default="all")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument(
        "--to",
        choices=["wandb", "mlflow"],
        help="log the results to W&B or MLflow instead (optional packages)",
    )
    p.add_argument(
        "--online",
        action="store_true",
        help="with --to: sync to the server (default: offline files, no network)",
    )
    p.add_argument(
        "--no-training",
        action="store_true",
        help="with --to: leave out the training curves (default: each run's training_log.csv "
        "is logged as train/<column> at its steps; --metric/--task/--step filter only the "
        "evaluation results)",
    )
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="what the results index holds")
    p.add_argument("--rebuild", action="store_true", help="delete and rebuild the index first")
    _common(p)
    p.set_defaults(func=cmd_stats)


def run(func, args) -> int:
    """Registry errors end with one line naming the problem, not a traceback."""
    try:
        return func(args)
    except (RegistryError, ResultFileError, ValueError, ImportError) as err:
        print(f"ftlab {args.command}: {err}", file=sys.stderr)
        return 2
    except sqlite3.Error as err:  # the index failed after it was opened (e.g. a disk error)
        where = Path(getattr(args, "results", "results")) / "<study>" / "index.sqlite"
        print(
            f"ftlab {args.command}: results index {where}: {err}; it is only a cache of the "
            "result files: `ftlab stats --rebuild` rebuilds it",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        if type(err).__name__ != "WorkflowError":  # Snakemake's: a bad config, a broken rule
            raise
        print(f"ftlab {args.command}: {err}", file=sys.stderr)
        return 2
