"""Reading what the evaluations wrote: metric rows and per-sample outcomes, for every kind.

An evaluation of model M at step S writes ``evals/M/checkpoint-S/<name>.json`` and, beside it,
``<name>.samples.jsonl``. Three metric-file shapes are understood, whatever the study kind:

- ``{"results": [{"task", "metric", "value", "n", ...}]}``: the shape a new study kind should
  write (docs/adding-a-study-kind.md); an entry may name its ``eval_set``, so one file holds
  several sets (the world model's ``world_eval.json``: every eval set of a checkpoint);
- ``{"benchmarks": [{"task", "metric", "value", "stderr", "n"}]}``: ``lm_eval.json``;
- ``{"datasets": {dataset: {"accuracy", "partial_accuracy", "format_accuracy", "n"}}}``:
  ``in_domain.json``;
- ``{"tasks": [{"task", "domain", "metric", "value", "n", "reward"}]}``: the multi-task kind's
  ``mtl_eval.json`` (each task's own metric, and ``reward``, its per-sample outcomes in [0, 1]
  averaged); its samples file has one row per item (``task``, ``sample``, ``reward``), so
  ``reward`` is the metric paired item by item (the task's own metric may be a transform of
  it: a percentage, an error);
- ``{"pass_at_k": {k: value}, "accuracy", "n_problems", "n_samples", ...}``: TIR's
  ``<eval_set>/scores.json``, one folder per eval set (metrics ``accuracy`` over samples and
  ``pass@<k>`` over problems; task: the set). Its per-sample file is ``scored.jsonl`` beside
  it, several samples per problem: the test item is the problem, its value that problem's
  unbiased pass@k from its n samples and c correct ones (``accuracy``: pass@1 = c/n), so two
  models are paired problem by problem.

A row's ``task`` label is its set's name (the entry's ``eval_set``, else the file's name) when
the set holds one task (``angle__no_atlantis``) and ``<set>:<task>`` otherwise
(``multitask__no_atlantis:angle``); lm-eval and in-domain rows are labelled by their benchmark /
dataset. Per-sample rows (a world sample names its ``eval_set``) get the same labels, so a
leaderboard row and the samples behind it always agree.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

from ftlab.paths import PATTERNS

SAMPLES_SUFFIX = ".samples.jsonl"
TIR_RESULT = Path(PATTERNS["tir_scores"]).name  # <eval_set>/scores.json
TIR_SAMPLES = Path(PATTERNS["tir_scored"]).name  # <eval_set>/scored.jsonl, one line per sample
NOT_RESULTS = frozenset({"provenance.json"})  # JSON files beside results that are not results
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
SEED_RE = re.compile(r"^(?P<group>.+)_seed(?P<seed>\d+)$")
# Metrics where smaller is better; every other metric (accuracy, acc, exact_match, ...) is a
# score. Names are compared without an lm-eval filter suffix (",none").
LOWER_IS_BETTER = frozenset(
    {
        "mae",
        "mse",
        "rmse",
        "error",
        "loss",
        "perplexity",
        "word_perplexity",
        "byte_perplexity",
        "bits_per_byte",
        "ter",
    }
)
# mtl_eval.json: the per-sample outcome every task has (ftlab.mtl.evaluate's contract)
MTL_REWARD = "reward"
# in_domain.json metric -> the per-sample field that holds it
IN_DOMAIN_FIELDS = {
    "accuracy": "correct",
    "partial_accuracy": "partial",
    "format_accuracy": "format",
}


class ResultFileError(ValueError):
    """A result file that cannot be read; the message names the file and what is wrong."""


def lower_is_better(metric: str) -> bool:
    return metric.split(",")[0] in LOWER_IS_BETTER


def split_model(model: str) -> tuple[str, int | None]:
    """`ftwb1-3_seed2` -> (`ftwb1-3`, 2): the group is what seeds repeat; no seed -> None."""
    m = SEED_RE.match(model)
    return (m["group"], int(m["seed"])) if m else (model, None)


def _load_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultFileError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ResultFileError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _num(x) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def parse_result(path: str | Path) -> list[dict]:
    """Metric rows of one result file: {source, task, metric, value, stderr, n}. A JSON file
    of none of the known shapes gives no rows (it is not a result)."""
    path = Path(path)
    obj = _load_json(path)
    source = path.stem
    rows = []
    if isinstance(obj.get("pass_at_k"), dict) and "n_problems" in obj:
        # TIR scores.json, one per eval set folder: the set is the task; source names the
        # file relative to the checkpoint folder (<set>/scores)
        eval_set = path.parent.name
        source = f"{eval_set}/{path.stem}"
        rows.append(_row(path, source, eval_set, "accuracy",
                         {"value": obj.get("accuracy"), "n": obj.get("n_samples")}))  # fmt: skip
        for k, v in sorted(obj["pass_at_k"].items(), key=lambda kv: int(kv[0])):
            rows.append(_row(path, source, eval_set, f"pass@{k}",
                             {"value": v, "n": obj.get("n_problems")}))  # fmt: skip
    elif isinstance(obj.get("results"), list):
        entries = [e for e in obj["results"] if isinstance(e, dict)]
        tasks = _set_tasks(entries, source)
        for e in entries:
            rows.append(_row(path, source, _label(tasks, source, e), e.get("metric"), e))
    elif _is_mtl(obj):
        for e in obj["tasks"]:
            rows.append(_row(path, source, e.get("task"), e.get("metric"), e))
            if e.get("metric") != MTL_REWARD:
                rows.append(_row(path, source, e.get("task"), MTL_REWARD,
                                 {"value": e.get("reward"), "n": e.get("n")}))  # fmt: skip
    elif isinstance(obj.get("benchmarks"), list):
        for e in obj["benchmarks"]:
            rows.append(_row(path, source, e.get("task"), e.get("metric"), e))
    elif isinstance(obj.get("datasets"), dict):
        for dataset, res in obj["datasets"].items():
            for metric in IN_DOMAIN_FIELDS:
                if metric in res:
                    rows.append(
                        _row(
                            path, source, dataset, metric, {"value": res[metric], "n": res.get("n")}
                        )
                    )
    return rows


def _set_tasks(entries: list[dict], source: str) -> dict[str, set]:
    """{set name: its tasks} of `results` entries; an entry without `eval_set` is of the set
    the file is named after."""
    tasks: dict[str, set] = defaultdict(set)
    for e in entries:
        tasks[str(e.get("eval_set") or source)].add(e.get("task"))
    return tasks


def _label(set_tasks: dict[str, set], source: str, entry: dict) -> str:
    """`<set>` for a set of one task, `<set>:<task>` otherwise (entry: a results entry or a
    sample row)."""
    name = str(entry.get("eval_set") or source)
    return name if len(set_tasks.get(name, ())) <= 1 else f"{name}:{entry.get('task')}"


def _row(path: Path, source: str, task, metric, entry: dict) -> dict:
    if not task or not metric:
        raise ResultFileError(f"{path}: a result entry lacks 'task' or 'metric': {entry}")
    return {
        "source": source,
        "task": str(task),
        "metric": str(metric),
        "value": _num(entry.get("value")),
        "stderr": _num(entry.get("stderr")),
        "n": int(entry["n"]) if _num(entry.get("n")) is not None else None,
    }


def result_files(checkpoint_dir: Path) -> list[Path]:
    """The metric files of one evaluated checkpoint (not samples, not provenance)."""
    return sorted(
        p
        for p in checkpoint_dir.glob("*.json")
        if p.name not in NOT_RESULTS and not p.name.startswith(".")
    )


def samples_path(result_path: Path) -> Path:
    result_path = Path(result_path)
    if result_path.name == TIR_RESULT:
        return result_path.with_name(TIR_SAMPLES)
    return result_path.with_name(result_path.stem + SAMPLES_SUFFIX)


def _is_mtl(obj: dict) -> bool:
    """mtl_eval.json: a list of task entries that carry their `reward`."""
    tasks = obj.get("tasks")
    return isinstance(tasks, list) and all(isinstance(e, dict) and "reward" in e for e in tasks)


def _is_tir(obj: dict) -> bool:
    return isinstance(obj.get("pass_at_k"), dict) and "n_problems" in obj


def _json_lines(path: Path):
    """(line number, object) of each non-blank line of a JSON-lines file; a line that is not
    JSON is a ResultFileError naming the file and line."""
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise ResultFileError(f"{path}:{line_no}: not JSON ({err})") from None


def _tir_problem_values(path: Path, metric: str) -> dict[tuple, float]:
    """{(problem id,): unbiased pass@k of that problem} from TIR's scored.jsonl (one line per
    sample: problem_id, correct); ``accuracy`` is pass@1 (c/n)."""
    from ftlab.tir.passk import pass_at_k

    m = re.fullmatch(r"pass@(\d+)", metric)
    if metric != "accuracy" and not m:
        raise ResultFileError(f"{path}: {metric!r} has no per-problem values (accuracy, pass@k)")
    k = int(m[1]) if m else 1
    counts: dict = defaultdict(lambda: [0, 0])  # problem -> [samples, correct]
    for line_no, row in _json_lines(path):
        try:
            pid, correct = row["problem_id"], bool(row["correct"])
        except (KeyError, TypeError) as err:
            raise ResultFileError(f"{path}:{line_no}: not a scored sample ({err})") from None
        counts[pid][0] += 1
        counts[pid][1] += correct
    short = {pid: n for pid, (n, _) in counts.items() if n < k}
    if short:
        raise ResultFileError(
            f"{path}: {metric} needs {k} samples per problem; {len(short)} problem(s) have "
            f"fewer (e.g. {next(iter(short))})"
        )
    return {(pid,): pass_at_k(n, c, k) for pid, (n, c) in counts.items()}


def read_samples(result_path: str | Path, metric: str) -> dict[str, dict[tuple, float]]:
    """Per-sample values of `metric` from the samples file beside `result_path`:
    {task label: {sample key: value}}. The key identifies the same test item across models
    (lm-eval: task, doc id and filter; in-domain: dataset and row id; otherwise the prompt and
    its occurrence), so two models' outcomes can be paired. An lm-eval metric may name its
    filter (``exact_match,strict-match``); only rows of that filter are read (``none`` when the
    metric names none), so two filters' outcomes of one document are never pooled."""
    result_path = Path(result_path)
    path = samples_path(result_path)
    if not path.is_file():
        raise ResultFileError(f"{path}: per-sample file missing (needed for significance)")
    obj = _load_json(result_path)
    if _is_tir(obj):  # the set is the task (parse_result)
        return {result_path.parent.name: _tir_problem_values(path, metric)}
    if _is_mtl(obj):
        return _mtl_values(path, metric)
    source = result_path.stem
    set_tasks, task_metric = {}, {}
    base_metric, _, filt = metric.partition(",")
    filt = filt or "none"
    if isinstance(obj.get("results"), list):
        entries = [e for e in obj["results"] if isinstance(e, dict)]
        set_tasks = _set_tasks(entries, source)
        task_metric = {
            (str(e.get("eval_set") or source), e.get("task")): str(e.get("metric")) for e in entries
        }
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    seen: dict[tuple, int] = defaultdict(int)
    for _, row in _json_lines(path):
        group = (str(row.get("eval_set") or source), row.get("task"))
        if task_metric and task_metric.get(group) != base_metric:
            continue  # a world row scored with another metric than the one asked for
        value = _sample_value(row, base_metric)
        if value is None:
            continue
        if "benchmark" in row:
            if str(row.get("filter", "none")) != filt:
                continue  # another lm-eval filter's outcome of the same document
            label = row["benchmark"]
            key = (row.get("task"), row.get("doc_id"), row.get("filter"))
        elif "dataset" in row:
            label = row["dataset"]
            key = (row.get("id") if row.get("id") is not None else row.get("prompt"),)
        else:
            label = _label(set_tasks, source, row)
            key = (row.get("prompt"),)
        seen[(label, key)] += 1  # the same prompt twice is two items
        out[label][(*key, seen[(label, key)])] = value
    return dict(out)


def _mtl_values(path: Path, metric: str) -> dict[str, dict[tuple, float]]:
    """{task: {(sample id,): reward}} of an mtl_eval.samples.jsonl (one row per item). Only
    `reward` is per item: a task's own metric may be a transform of the rewards."""
    if metric != MTL_REWARD:
        raise ResultFileError(f"{path}: per-item outcomes are {MTL_REWARD!r} (in [0, 1]); "
                              f"{metric!r} is a task metric without per-item values")  # fmt: skip
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for line_no, row in _json_lines(path):
        try:
            out[str(row["task"])][(row["sample"],)] = float(row[MTL_REWARD])
        except (KeyError, TypeError, ValueError) as err:
            raise ResultFileError(f"{path}:{line_no}: not a multi-task sample ({err})") from None
    return dict(out)


def check_samples(result_path: str | Path, samples: dict[str, dict], rows: list[dict]) -> None:
    """The per-sample values read for a metric (`samples`, as read_samples returns them) must
    be the ones its metric rows (`rows`: task, metric, value, n of this file) summarise: one
    per item (`n`) and, where the value is by definition their mean (every shape but lm-eval's,
    whose group and instruction-level metrics aggregate otherwise), with that mean. A cut or
    stale samples file is an error naming it, not a silently smaller test."""
    result_path = Path(result_path)
    obj = _load_json(result_path)
    lm_eval = isinstance(obj.get("benchmarks"), list)
    where = samples_path(result_path)
    for r in rows:
        values = list(samples.get(r["task"], {}).values())
        if not values:
            continue
        what = f"{r['metric']} on {r['task']}"
        if _is_tir(obj):  # items are problems; accuracy's value is over samples: check pass@1
            r = {**r, "n": obj.get("n_problems")}
            if r["metric"] == "accuracy":
                r["value"] = _num((obj.get("pass_at_k") or {}).get("1"))
        if r["n"] is not None and len(values) != r["n"]:
            raise ResultFileError(
                f"{where}: {len(values)} per-sample values of {what}, but {result_path.name} "
                f"reports n = {r['n']}: the samples file is incomplete or from another "
                "evaluation; re-run that evaluation"
            )
        mean = sum(values) / len(values)
        if (
            not lm_eval
            and r["value"] is not None
            and not math.isclose(mean, r["value"], rel_tol=1e-6, abs_tol=1e-9)
        ):
            raise ResultFileError(
                f"{where}: the mean of its per-sample values of {what} is {mean:.6g}, but "
                f"{result_path.name} reports {r['value']:.6g}: the samples file is from "
                "another evaluation; re-run that evaluation"
            )


def _sample_value(row: dict, metric: str) -> float | None:
    metrics = row.get("metrics")
    if isinstance(metrics, dict) and metric in metrics:
        return _num(metrics[metric])
    field = IN_DOMAIN_FIELDS.get(metric)
    if field and field in row:
        return _num(row[field])
    if "score" in row and "metrics" not in row and "dataset" not in row:
        return _num(row["score"])  # world rows: the file's own metric
    return None
