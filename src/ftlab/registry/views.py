"""What `ftlab list | show | leaderboard | compare | significance | export | stats` compute.

Each function returns plain data (lists of dicts) and a ``format_*`` twin turns it into text,
so tests check numbers, not layout.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict

import numpy as np

from ftlab import stats
from ftlab.registry.records import check_samples, lower_is_better, read_samples
from ftlab.registry.store import Registry, RegistryError, RunRef, better, pick_step


# -- tables -------------------------------------------------------------------------------
def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ",".join(map(str, v)) if len(v) <= 6 else f"{v[0]}..{v[-1]} ({len(v)})"
    return str(v)


# -- list / show --------------------------------------------------------------------------
def list_runs(reg: Registry) -> list[dict]:
    out = []
    for r in reg.runs():
        prov = r["train_provenance"] or {}
        git = prov.get("git") or {}
        out.append(
            {
                "run": reg.name(r["ref"]),
                "seed": r["seed"],
                "checkpoints": r["checkpoints"],
                "evaluated": r["evaluated_steps"],
                "results": r["n_results"],
                "trained_at": prov.get("finished_at"),
                "wall_s": prov.get("wall_s"),
                "commit": (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else "")
                if git.get("commit")
                else None,
            }
        )
    return out


def show_run(reg: Registry, spec: str) -> str:
    refs = reg.resolve(spec)
    if len(refs) > 1:
        return "\n\n".join(show_run(reg, reg.name(r)) for r in refs)
    ref = refs[0]
    run = next(r for r in reg.runs() if r["ref"] == ref)
    lines = [
        f"run {reg.name(ref)} (study {ref.study}, group {ref.group}, seed {ref.seed})",
        f"  checkpoints saved: {_fmt(run['checkpoints'] or None) or 'none'}",
        f"  evaluated steps:   {_fmt(run['evaluated_steps'] or None) or 'none'}",
    ]
    rows = pick_step(reg.results(refs=[ref]), "last")
    if rows:
        lines.append(f"\nresults at step {rows[0]['step']}:")
        cols = ["task", "metric", "value", "stderr", "n"]
        lines.append(_indent(table(sorted(rows, key=lambda r: (r["metric"], r["task"])), cols)))
    lines += format_training_summary(training_summary(reg, ref))
    for prov in reg.provenance(ref):
        lines.append(f"\nprovenance ({prov.get('stage')}, {prov['path']}):")
        lines.append(_indent(format_provenance(prov)))
    if not reg.provenance(ref):
        lines.append("\nprovenance: none recorded (outputs from before provenance was written)")
    return "\n".join(lines)


# -- training curves ------------------------------------------------------------------------
LEARNING_RATE = ("learning_rate", "lr")  # TRL kinds' name, then the world kinds'


def training_summary(reg: Registry, ref: RunRef) -> dict | None:
    """What `show` says of a run's training log: steps logged (distinct steps with a value),
    first, last and min loss, the last learning rate, the last value of every column whose name
    has "reward" (GRPO). (step, value) pairs; NaN losses are left out of min. None: no log."""
    curves = reg.training(ref)
    if not curves:
        return None
    steps = sorted({st for points in curves.values() for st, _ in points})
    out: dict = {"steps": len(steps), "first_step": steps[0], "last_step": steps[-1]}
    loss = curves.get("loss")
    if loss:
        finite = [p for p in loss if not math.isnan(p[1])]
        out["loss"] = {
            "first": loss[0],
            "last": loss[-1],
            "min": min(finite, key=lambda p: p[1]) if finite else None,
            "nan": len(loss) - len(finite),
        }
    lr = next((m for m in LEARNING_RATE if curves.get(m)), None)
    out["learning_rate"] = (lr, curves[lr][-1]) if lr else None
    out["rewards"] = {m: pts[-1] for m, pts in curves.items() if "reward" in m and pts}
    return out


def format_training_summary(s: dict | None) -> list[str]:
    if s is None:
        return ["\ntraining log: none indexed (no models/<model>/training_log.csv)"]

    def at(p):
        return f"{_fmt(p[1])} (step {p[0]})"

    lines = [
        f"\ntraining log: {s['steps']} steps logged ({s['first_step']}..{s['last_step']}); "
        "`ftlab history` prints the curves"
    ]
    if "loss" in s:
        loss = s["loss"]
        text = f"first {at(loss['first'])}, last {at(loss['last'])}"
        text += f", min {at(loss['min'])}" if loss["min"] else ""
        text += f", {loss['nan']} NaN" if loss["nan"] else ""
        lines.append(f"  loss:          {text}")
    if s["learning_rate"]:
        name, p = s["learning_rate"]
        lines.append(f"  last {name + ':':<9} {at(p)}")
    for name, p in sorted(s["rewards"].items()):
        lines.append(f"  last {name}: {at(p)}")
    return lines


def history(reg: Registry, spec: str, metrics: list[str] | None = None):
    """(run name, metrics, rows): one row per logged step, {step, <metric>: value or None}, of
    one run's training log; every metric it logged unless `metrics` names some."""
    refs = reg.resolve(spec)
    if len(refs) > 1:
        raise RegistryError(
            f"{spec!r} is a group of {len(refs)} runs ({', '.join(reg.name(r) for r in refs)}); "
            "name one run"
        )
    curves = reg.training(refs[0], metrics)
    if not curves:
        raise RegistryError(
            f"run {reg.name(refs[0])} has no training log indexed (models/<model>/"
            "training_log.csv is written when its training finishes)"
        )
    by_step: dict[int, dict] = defaultdict(dict)
    for m, points in curves.items():
        for st, v in points:
            by_step[st][m] = v
    rows = [{"step": st, **{m: by_step[st].get(m) for m in curves}} for st in sorted(by_step)]
    return reg.name(refs[0]), list(curves), rows


def format_history(metrics: list[str], rows: list[dict], fmt: str) -> str:
    """csv: full precision, blank where a step has no value of a metric; table: 4 digits."""
    if fmt == "table":
        return table(rows, ["step", *metrics]) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", *metrics])
    for r in rows:
        w.writerow([r["step"], *("" if r[m] is None else repr(r[m]) for m in metrics)])
    return buf.getvalue()


def format_provenance(p: dict) -> str:
    git = p.get("git") or {}
    commit = git.get("commit") or "unknown"
    dirty = {True: f"dirty, diff sha256 {str(git.get('diff_sha256'))[:12]}", False: "clean"}.get(
        git.get("dirty"), "unknown"
    )
    pk = p.get("packages") or {}
    fields = [
        ("git", f"{commit[:12]} on {git.get('branch')} ({dirty})"),
        ("host / user", f"{p.get('host')} / {p.get('user')}"),
        ("python", p.get("python")),
        ("packages", ", ".join(f"{k} {v}" for k, v in pk.items())),
        ("device", f"{p.get('device')}" + (f" ({p['gpu_name']})" if p.get("gpu_name") else "")),
        ("config sha256", p.get("config_sha256")),
        ("data sha256", p.get("data_sha256")),
        ("started / finished", f"{p.get('started_at')} / {p.get('finished_at')}"),
        ("wall time", f"{p['wall_s']:.1f} s" if p.get("wall_s") is not None else None),
        ("SLURM job", p.get("slurm_job_id")),
    ]
    return "\n".join(f"{k:<19} {v if v is not None else '-'}" for k, v in fields)


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def used_steps(
    reg: Registry, refs, metric: str | None = None, task: str | None = None, step: str = "last"
) -> dict:
    """{run: the (newest) step its answer uses} for `--step`; runs without results are absent."""
    out: dict = {}
    for r in pick_step(reg.results(metric, task, refs=list(refs)), step):
        ref = RunRef(r["study"], r["model"])
        out[ref] = max(out.get(ref, r["step"]), r["step"])
    return out


# -- leaderboard ---------------------------------------------------------------------------
class Leaderboard(list):
    """The ranked entries, and what the ranking is over: `tasks` (the tasks in each mean),
    `excluded` (tasks left out because some entry lacks them: {task: [entries lacking it]}),
    `nan` (entries whose value is NaN or missing, ranked last)."""

    tasks: list[str]
    excluded: dict[str, list[str]]
    nan: list[str]
    common: bool


def leaderboard(
    reg: Registry,
    metric: str,
    task: str | None = None,
    step: str = "last",
    by: str = "run",
    common: bool = True,
) -> Leaderboard:
    """Runs (or seed groups) ranked by `metric`: the mean over the matching tasks (one task
    with --task). Lower is better for error metrics (mae, loss, perplexity, ...).

    common (default): every mean is over the tasks that every run (run x step) being ranked
    has, so no run is ranked on an easier set than another; the tasks left out, and the runs
    lacking them, are listed (`excluded`). common=False: each run's mean over its own tasks,
    with the tasks it lacks in `missing`. A NaN (or missing) value makes the entry's value NaN,
    ranked last and listed in `nan`."""
    reg.check_metric(metric, task)
    rows = pick_step(reg.results(metric, task), step)
    per_run = defaultdict(list)
    for r in rows:
        per_run[(r["study"], r["model"], r["step"])].append(r)
    run_tasks = {k: {r["task"] for r in rs} for k, rs in per_run.items()}
    every = set().union(*run_tasks.values()) if run_tasks else set()
    shared = set.intersection(*run_tasks.values()) if run_tasks else set()
    if common and not shared:
        raise RegistryError(
            f"no {metric} task is evaluated for every run ranked (tasks: "
            f"{', '.join(sorted(every))}); rank one task with --task, or each run over its own "
            "tasks with --all-tasks"
        )
    board = Leaderboard()
    board.common = common
    board.tasks = sorted(shared if common else every)
    board.excluded = {}
    entries = []
    for (study, model, st), rs in per_run.items():
        ref = RunRef(study, model)
        use = [r for r in rs if not common or r["task"] in shared]
        values = [math.nan if r["value"] is None else float(r["value"]) for r in use]
        missing = sorted(every - run_tasks[(study, model, st)])
        for t in missing if common else ():
            board.excluded.setdefault(t, []).append(reg.name(ref))
        entries.append(
            {
                "ref": ref,
                "run": reg.name(ref),
                "group": ref.group,
                "seed": ref.seed,
                "step": st,
                "value": float(np.mean(values)),
                "tasks": len(use),
                "n": sum(r["n"] or 0 for r in use),
                "missing": missing,
            }
        )
    if common:
        board.excluded = {t: sorted(board.excluded.get(t, [])) for t in sorted(every - shared)}
    if by == "group":
        groups = defaultdict(list)
        for e in entries:
            groups[(e["ref"].study, e["group"], e["step"] if step != "last" else None)].append(e)
        entries = []
        for (study, grp, st), es in groups.items():
            values = [e["value"] for e in es]
            mean, sd = stats.mean_sd(values)
            if any(math.isnan(v) for v in values):
                mean, sd = math.nan, None  # a seed without a value: no group mean
            name = grp if len(reg.studies) == 1 else f"{study}/{grp}"
            entries.append(
                {
                    "run": name,
                    "group": grp,
                    "seeds": len(es),
                    "step": st if st is not None else _fmt(sorted({e["step"] for e in es})),
                    "value": mean,
                    "sd": sd,
                    "tasks": max(e["tasks"] for e in es),
                    "missing": sorted(set().union(*(e["missing"] for e in es))),
                }
            )
    key = better(metric)
    entries.sort(key=lambda e: (math.isnan(e["value"]), 0 if math.isnan(e["value"]) else key(
        e["value"]), e["run"]))  # fmt: skip
    for rank, e in enumerate(entries, 1):
        e["rank"] = rank
        e.pop("ref", None)
    board.extend(entries)
    board.nan = [e["run"] for e in entries if math.isnan(e["value"])]
    return board


def format_leaderboard_notes(board: Leaderboard, by: str) -> list[str]:
    """What the means are over, what was left out, NaN entries, and what sd is."""
    lines = []
    if board.common:
        lines.append(
            f"each value: mean over the {len(board.tasks)} task(s) every ranked run has "
            f"({_fmt(board.tasks)})"
        )
        for t, lacking in board.excluded.items():
            lines.append(f"  left out: {t} (lacked by {', '.join(lacking)})")
    else:
        lines.append("each value: mean over the run's own tasks (--all-tasks); see 'missing'")
    if board.nan:
        lines.append(f"nan: no value (NaN or missing) for {', '.join(board.nan)}; ranked last")
    if by == "group":
        lines.append("sd: sample standard deviation over seeds (ddof=1); - with one seed")
    return lines


# -- compare ------------------------------------------------------------------------------
VOLATILE = (
    "created_at",
    "step",
    "epoch",
    "fingerprint",
    "started_at",
    "finished_at",
    "wall_s",
    "slurm",
    "slurm_job_id",
    "host",
    "path",
)


def flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and all(not isinstance(v, dict | list) for v in obj):
        out[prefix[:-1]] = json.dumps(obj)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def compare(reg: Registry, specs: list[str], metric: str | None = None, step: str = "last"):
    """(config differences, metric table) of two or more runs. The configuration of a run is its
    final checkpoint's self-description (ftlab_checkpoint.json) and its training provenance."""
    if len(specs) < 2:
        raise RegistryError("compare needs two or more runs")
    if metric:
        reg.check_metric(metric)  # a metric no run has is a mistake, not "no common results"
    refs = []
    for s in specs:
        refs += [r for r in reg.resolve(s) if r not in refs]
    if len(refs) < 2:
        raise RegistryError(
            f"compare needs two or more different runs; {', '.join(specs)} name only "
            f"{reg.name(refs[0])}"
        )
    runs = {r["ref"]: r for r in reg.runs()}
    configs = {}
    for ref in refs:
        run = runs[ref]
        prov = {k: v for k, v in (run["train_provenance"] or {}).items() if k not in VOLATILE}
        cfg = {k: v for k, v in (run["checkpoint_meta"] or {}).items() if k not in VOLATILE}
        configs[ref] = {**flatten(cfg), **flatten(prov, "provenance.")}
    keys = sorted(set().union(*configs.values()))
    diffs = [
        {"key": k, **{reg.name(r): configs[r].get(k) for r in refs}}
        for k in keys
        if len({json.dumps(configs[r].get(k), default=str) for r in refs}) > 1
    ]
    rows = pick_step(reg.results(metric, refs=refs), step)
    cells = defaultdict(dict)
    for r in rows:
        cells[(r["metric"], r["task"])][reg.name(RunRef(r["study"], r["model"]))] = r["value"]
    names = [reg.name(r) for r in refs]
    metric_rows = []
    for (m, task), vals in sorted(cells.items()):
        row = {"metric": m, "task": task, **{n: vals.get(n) for n in names}}
        present = {n: v for n, v in vals.items() if v is not None}
        if len(present) > 1:
            top = min(better(m)(v) for v in present.values())
            best = [n for n in names if n in present and better(m)(present[n]) == top]
            row["best"] = best[0] if len(best) == 1 else f"tie ({', '.join(best)})"
        metric_rows.append(row)
    return diffs, metric_rows, names


def without_config(reg: Registry, refs) -> list[str]:
    """Runs with neither a checkpoint self-description nor training provenance: there is no
    configuration to compare, so "identical" would be a claim without evidence."""
    runs = {r["ref"]: r for r in reg.runs()}
    return [
        reg.name(r)
        for r in refs
        if not runs[r]["checkpoint_meta"] and not runs[r]["train_provenance"]
    ]


def compare_winners(metric_rows: list[dict], names: list[str]) -> list[dict]:
    """Seed 001's "Winner / Improvement vs average of others", per metric: each run's mean over
    the tasks every compared run has a value for; the winner has the best mean (lower for error
    metrics; None on a tie), improvement = its mean - the mean of the others' means (signed so
    that positive is better), relative = improvement / |others' mean|."""
    out = []
    for m in sorted({r["metric"] for r in metric_rows}):
        rows = [r for r in metric_rows if r["metric"] == m]
        rows = [r for r in rows if all(_finite(r.get(n)) for n in names)]
        if not rows or len(names) < 2:
            continue
        means = {n: float(np.mean([r[n] for r in rows])) for n in names}
        key = better(m)
        best = min(means.values(), key=key)
        winners = [n for n in names if means[n] == best]
        winner = winners[0] if len(winners) == 1 else None
        others = float(np.mean([v for n, v in means.items() if n != winners[0]]))
        sign = -1.0 if lower_is_better(m) else 1.0
        improvement = sign * (best - others)
        out.append(
            {
                "metric": m,
                "tasks": len(rows),
                "means": means,
                "winner": winner,
                "tied": winners if winner is None else [],
                "value": best,
                "others_mean": others,
                "improvement": improvement,
                "relative": improvement / abs(others) if others else math.nan,
            }
        )
    return out


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def format_winner(w: dict) -> str:
    what = f"{w['metric']} (mean over the {w['tasks']} task(s) every run has)"
    if w["winner"] is None:
        return f"{what}: tie between {', '.join(w['tied'])} at {w['value']:.6g}"
    rel = f", {w['relative']:+.1%}" if math.isfinite(w["relative"]) else ""
    return (
        f"{what}: winner {w['winner']} {w['value']:.6g}; improvement vs average of others "
        f"({w['others_mean']:.6g}): {w['improvement']:+.6g}{rel}"
    )


# -- significance --------------------------------------------------------------------------
def paired_outcomes(
    reg: Registry, a: str, b: str, metric: str, task: str | None, step: str = "last"
):
    """Per-item values of A and B on the same items (matched by sample id, not file order).

    The test item is the unit. Two runs: one pair per item. Two groups of seeds: seed s of A is
    paired with seed s of B, and an item scored under several seeds counts once, with A's and
    B's outcomes averaged over the seeds that scored it in both runs; seeds scored on the same
    questions are not independent samples, so pooling them would shrink p with every seed
    added (two copies of one seed would halve the spread). Items no seed pair shares are left
    out and counted. Returns (a, b, info): info["pairs"] is one {a, b, step_a, step_b, n_a,
    n_b, common} per pair of runs, info["items"] the number of distinct items and
    info["seeds_per_item"] {number of seeds: items scored under that many}."""
    if step == "all":
        raise RegistryError(
            "significance compares one checkpoint of each run: --step all is not allowed; "
            "choose --step last or a step number"
        )
    reg.check_metric(metric, task)
    ra, rb = reg.resolve(a), reg.resolve(b)
    if len(ra) > 1 or len(rb) > 1:
        by_seed_a, by_seed_b = {r.seed: r for r in ra}, {r.seed: r for r in rb}
        seeds = sorted(set(by_seed_a) & set(by_seed_b), key=lambda s: (s is None, s))
        if not seeds:
            raise RegistryError(
                f"{a} (seeds {sorted(by_seed_a)}) and {b} (seeds "
                f"{sorted(by_seed_b)}) share no seed to pair on"
            )
        pairs = [(by_seed_a[s], by_seed_b[s]) for s in seeds]
    else:
        pairs = [(ra[0], rb[0])]
    sums: dict[tuple, list] = {}  # item -> [sum of A, sum of B, seeds]
    used = []
    for pa, pb in pairs:
        (sa, step_a), (sb, step_b) = (
            _samples(reg, pa, metric, task, step),
            _samples(reg, pb, metric, task, step),
        )
        common = sorted(set(sa) & set(sb), key=repr)
        if not common:
            raise RegistryError(
                f"{reg.name(pa)} and {reg.name(pb)} have no common test items for "
                f"{metric} (task {task or 'any'})"
            )
        for k in common:
            acc = sums.setdefault(k, [0.0, 0.0, 0])
            acc[0] += sa[k]
            acc[1] += sb[k]
            acc[2] += 1
        used.append(
            {"a": reg.name(pa), "b": reg.name(pb), "step_a": step_a, "step_b": step_b,
             "n_a": len(sa), "n_b": len(sb), "common": len(common)}
        )  # fmt: skip
    keys = sorted(sums, key=repr)
    xa = np.array([sums[k][0] / sums[k][2] for k in keys])
    xb = np.array([sums[k][1] / sums[k][2] for k in keys])
    per_item = defaultdict(int)
    for k in keys:
        per_item[sums[k][2]] += 1
    info = {"pairs": used, "items": len(keys), "seeds_per_item": dict(sorted(per_item.items()))}
    return xa, xb, info


def _samples(
    reg: Registry, ref: RunRef, metric: str, task: str | None, step: str
) -> tuple[dict, int]:
    """({item key: value}, the step used) of one run."""
    rows = [r for r in reg.results(metric, task, refs=[ref])]
    rows = pick_step(rows, step)
    if not rows:
        raise RegistryError(
            f"{reg.name(ref)} has no {metric} results"
            + (f" for task {task!r}" if task else "")
            + f" at step {step}"
        )
    out = {}
    step_used = rows[0]["step"]
    for source in sorted({r["source"] for r in rows}):
        tasks = {r["task"] for r in rows if r["source"] == source}
        path = reg.result_path(ref, rows[0]["step"], source)
        read = read_samples(path, metric)
        check_samples(path, read, [r for r in rows if r["source"] == source])
        for label, items in read.items():
            if label in tasks:
                out.update({(label, *k): v for k, v in items.items()})
    return out, step_used


def significance(
    reg: Registry,
    a: str,
    b: str,
    metric: str,
    task: str | None,
    method: str = "auto",
    n_resamples: int = 10000,
    seed: int = 0,
    step: str = "last",
    alpha: float = 0.05,
    min_bootstrap_items: int | None = None,
) -> dict:
    """Paired test of A vs B; `significant` is p < alpha (never for a result flagged not
    decidable), and the interval (where the method has one) is at confidence 1 - alpha."""
    if not 0 < alpha < 1:
        raise RegistryError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    xa, xb, info = paired_outcomes(reg, a, b, metric, task, step)
    used = info["pairs"]
    res = stats.run_test(
        method, xa, xb, n_resamples=n_resamples, seed=seed, confidence=1 - alpha,
        min_bootstrap_items=min_bootstrap_items,
    )  # fmt: skip
    out = res.as_dict()
    diff = out["diff"]
    warnings = [
        f"{u['a']} vs {u['b']}: {u['n_a'] - u['common']} of {u['n_a']} items of {u['a']} and "
        f"{u['n_b'] - u['common']} of {u['n_b']} of {u['b']} have no match in the other run "
        "and are left out"
        for u in used
        if u["common"] < max(u["n_a"], u["n_b"])
    ]
    out.update(
        {
            "a": a,
            "b": b,
            "metric": metric,
            "task": task,
            "pairs": used,
            "items": info["items"],
            "seeds_per_item": info["seeds_per_item"],
            "lower_is_better": lower_is_better(metric),
            "alpha": alpha,
            "confidence": 1 - alpha,
            "min_bootstrap_items": stats.default_min_bootstrap_items(method, min_bootstrap_items),
            "significant": bool(res.p_value < alpha and res.decidable),
            "warnings": warnings,
        }
    )
    if diff == 0:
        out["better"] = None
    else:
        a_better = (diff < 0) if lower_is_better(metric) else (diff > 0)
        out["better"] = a if a_better else b
    return out


def format_significance(r: dict) -> str:
    lines = [
        f"{r['a']} vs {r['b']}: {r['metric']}"
        + (f" on {r['task']}" if r["task"] else "")
        + f" ({'lower' if r['lower_is_better'] else 'higher'} is better)"
    ]
    lines += [
        f"  {u['a']} (step {u['step_a']}) vs {u['b']} (step {u['step_b']}): {u['common']} items "
        f"paired ({u['a']} {u['n_a']}, {u['b']} {u['n_b']})"
        for u in r["pairs"]
    ]
    if len(r["pairs"]) > 1:
        spread = ", ".join(f"{k} under {s} seed(s)" for s, k in r["seeds_per_item"].items())
        lines.append(
            f"  {r['items']} distinct items tested, each item's outcome averaged over the seeds "
            f"that scored it ({spread})"
        )
    lines.append(f"  mean A {r['mean_a']:.6g}, mean B {r['mean_b']:.6g}, A - B = {r['diff']:.6g}")
    if r["ci_low"] is not None:
        lines.append(
            f"  {_pct(r['confidence'])} CI of A - B: [{r['ci_low']:.6g}, {r['ci_high']:.6g}] "
            f"({r['ci_from']})"
        )
    verdict = "significant" if r["significant"] else "not significant"
    lines.append(
        f"  p = {r['p_value']:.6g} ({r['p_from']}), {verdict} at alpha {r['alpha']:g}"
        + (f"; better: {r['better']}" if r["better"] else "")
    )
    if r["note"]:
        lines.append(f"  note: {r['note']}")
    return "\n".join(lines)


def _pct(level: float) -> str:
    return f"{100 * level:.4g}%"


# -- export -------------------------------------------------------------------------------
EXPORT_COLUMNS = [
    "study",
    "model",
    "group",
    "seed",
    "step",
    "source",
    "task",
    "metric",
    "value",
    "stderr",
    "n",
]


def export(rows: list[dict], fmt: str) -> str:
    rows = [{c: r.get(c) for c in EXPORT_COLUMNS} for r in rows]
    rows.sort(key=lambda r: (r["study"], r["model"], r["step"], r["metric"], r["task"]))
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(EXPORT_COLUMNS) + " |",
            "|" + "|".join("---" for _ in EXPORT_COLUMNS) + "|",
        ]
        lines += ["| " + " | ".join(_md(r[c]) for c in EXPORT_COLUMNS) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        head = " & ".join(_tex(c) for c in EXPORT_COLUMNS)
        body = [
            " & ".join(
                _tex(_fmt(r[c]) if isinstance(r[c], float) else r[c]) for c in EXPORT_COLUMNS
            )
            + r" \\"
            for r in rows
        ]
        return (
            "\n".join(
                [
                    r"\begin{tabular}{" + "l" * 7 + "r" * 4 + "}",
                    r"\toprule",
                    head + r" \\",
                    r"\midrule",
                    *body,
                    r"\bottomrule",
                    r"\end{tabular}",
                ]
            )
            + "\n"
        )
    raise RegistryError(f"unknown export format {fmt!r}; choose csv, json, markdown or latex")


def _md(v) -> str:
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)).replace("|", r"\|")


TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(v) -> str:
    return "--" if v is None else "".join(TEX.get(ch, ch) for ch in str(v))


# -- stats --------------------------------------------------------------------------------
def registry_stats(reg: Registry) -> list[dict]:
    out = []
    for study in reg.studies:
        c = reg.counts(study)
        c["study"] = study
        c["index"] = str(reg.root / study / "index.sqlite")
        c["refresh"] = reg.refreshed.get(study)
        out.append(c)
    return out
