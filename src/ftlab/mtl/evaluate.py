"""Evaluation of a multi-task checkpoint on a suite of tasks grouped into domains.

Whatever the objective, one job writes, per checkpoint:
  mtl_eval.json           {"model", "step", "epoch", "tasks": [{task, domain, metric, value, n,
                           reward}]}
  mtl_eval.samples.jsonl  one line per (task, sample): task, domain, sample (its id), reward,
                           and the raw output
`reward` is the per-sample outcome the comparison report bootstraps: higher is better and it
lies in [0, 1], so tasks with different metrics can be averaged into a domain.
- world tasks (ftlab.world.tasks): accuracy tasks as scored; error (mae) tasks
  1 - min(error / fail_value, 1), where fail_value is the error the task charges for an
  unparsable answer (so an unparsable answer scores 0, an exact one 1). This is also the
  validation reward of ftlab.mtl.world_train (metric `score`).
- lm-eval tasks (mtl.eval.engine lm_eval): the configured metric of each sample (accuracies,
  exact match: 0/1).
- guru tasks (mtl.eval.engine guru, seed 000's engine; ftlab.mtl.guru_eval): one line per
  PROBLEM (sample = its row in the task's parquet), reward = the mean score of its n sampled
  responses (the bootstrap's unit is the problem), with data_source, scores and outputs (the
  n responses) instead of output; each task row adds file, n_samples and main_eval (the
  seed's figures: pass@k, pass@1_(avg<k>), test_score(avg@k)/<data source>); metric is
  pass@1_(avg<k>) (value in percent, as main_eval prints it), n the number of problems.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ftlab.io import atomic_write_json, atomic_write_lines, read_json, read_jsonl

log = logging.getLogger("ftlab.mtl.evaluate")


def world_reward(task_name: str, score: float) -> float:
    """Per-sample reward in [0, 1] of a world task's raw score (see module docstring)."""
    from ftlab.world.tasks import TASKS

    task = TASKS[task_name]
    if task.metric == "accuracy":
        return float(score)
    return 1.0 - min(float(score) / task.fail_value, 1.0)


def mean_reward(samples: list[dict]) -> float:
    """Mean world reward of evaluator sample records (each with "task" and "score")."""
    if not samples:
        raise ValueError("no validation samples")
    return sum(world_reward(s["task"], s["score"]) for s in samples) / len(samples)


def write_outcomes(
    out_json: str, out_samples: str, tasks: list[dict], samples: list[dict], meta: dict
):
    atomic_write_lines(out_samples, (json.dumps(s) for s in samples))
    atomic_write_json(out_json, {**meta, "tasks": tasks})  # last: implies the samples file


def evaluate_world(
    *,
    checkpoint: str,
    suite: dict[str, str],
    test_sets: dict[str, str],
    out_json: str,
    out_samples: str,
    rows_per_task: int | None,
    batch_size: int | str,
    threads: int,
    device: str,
    meta: dict,
) -> None:
    """suite: task -> domain; test_sets: task -> its test jsonl."""
    from ftlab.batches import read_rows
    from ftlab.evaluate import evaluate_set, load_checkpoint

    model, tokenizer = load_checkpoint(checkpoint, threads, device)
    tasks, samples = [], []
    for task, domain in suite.items():
        rows = read_rows(test_sets[task])[:rows_per_task]
        records, metrics = evaluate_set(model, tokenizer, f"{task}__test", rows, batch_size)
        rewards = [world_reward(task, r["score"]) for r in records]
        (result,) = metrics["results"]
        tasks.append({
            "task": task, "domain": domain, "metric": result["metric"], "value": result["value"],
            "n": len(rows), "reward": sum(rewards) / len(rewards),
        })  # fmt: skip
        samples += [
            {"task": task, "domain": domain, "sample": i, "reward": w, "output": r["output"]}
            for i, (r, w) in enumerate(zip(records, rewards, strict=True))
        ]
        log.info("%s (%s): %s %.4g, reward %.4f", task, domain, result["metric"],
                 result["value"], tasks[-1]["reward"])  # fmt: skip
    write_outcomes(out_json, out_samples, tasks, samples, meta)


def evaluate_lm_eval(
    *,
    model_path: str,
    suite: dict[str, str],
    metrics: dict[str, str],
    lm_eval: dict,
    cache_path: str,
    out_json: str,
    out_samples: str,
    meta: dict,
) -> None:
    """suite: lm-eval task -> domain; metrics: task -> metric; lm_eval: batch_size, limit,
    include_path, num_fewshot, backend (as the llm kind's `llm.lm_eval`)."""
    from ftlab.llm.lm_eval_runner import lm_eval_options, run_lm_eval

    raw_json, raw_samples = f"{out_json}.lm_eval.json", f"{out_samples}.lm_eval.jsonl"
    run_lm_eval(
        model=model_path,
        benchmarks={t: metrics[t] for t in suite},
        out_json=raw_json,
        samples_path=raw_samples,
        cache_path=cache_path,
        meta=meta,
        **lm_eval_options(lm_eval),
    )
    tasks, samples = lm_eval_outcomes(read_json(raw_json), read_jsonl(raw_samples), suite, metrics,
                                      source=raw_samples)  # fmt: skip
    write_outcomes(out_json, out_samples, tasks, samples, meta)
    for p in (raw_json, raw_samples):
        Path(p).unlink()


def lm_eval_outcomes(result: dict, rows: list[dict], suite: dict, metrics: dict,
                     source: str = "the lm-eval samples"):  # fmt: skip
    """(task rows, per-sample rows) from ftlab.llm.lm_eval_runner output: one outcome per
    (benchmark, subtask, doc) with the benchmark's metric; filters other than the metric's
    own ("none" unless "metric,filter" is configured) are left out. A task without a sample
    row of its metric and filter is an error naming the task, its config key and `source`
    (the raw lm-eval samples file, kept for inspection), not a silent NaN reward."""
    by_task = {b["task"]: b for b in result["benchmarks"]}
    tasks, samples = [], []
    for task, domain in suite.items():
        name, _, filt = metrics[task].partition(",")
        filt = filt or "none"
        key = f"mtl.eval.metrics.{task}"
        if task not in by_task:
            raise ValueError(f"{source}: lm-eval returned no result for task {task!r} "
                             f"({key}: {metrics[task]!r})")  # fmt: skip
        mine = [r for r in rows if r["benchmark"] == task and r["filter"] == filt]
        if not mine:
            seen = sorted({f"{r['filter']}" for r in rows if r["benchmark"] == task})
            raise ValueError(
                f"{source}: no sample rows of task {task!r} with filter {filt!r} ({key}: "
                f"{metrics[task]!r}; filters present for the task: {seen or 'none'})"
            )
        lacking = [r for r in mine if name not in r["metrics"]]
        if lacking:
            raise ValueError(
                f"{source}: task {task!r} samples have no metric {name!r} ({key}: "
                f"{metrics[task]!r}; metrics present: {sorted(lacking[0]['metrics'])})"
            )
        outs = [float(r["metrics"][name]) for r in mine]
        samples += [
            {"task": task, "domain": domain, "sample": f"{r['task']}:{r['doc_id']}",
             "reward": o, "output": r["response"]}
            for r, o in zip(mine, outs, strict=True)
        ]  # fmt: skip
        b = by_task[task]
        reward = sum(outs) / len(outs)
        tasks.append({"task": task, "domain": domain, "metric": b["metric"], "value": b["value"],
                      "n": len(outs), "reward": reward})  # fmt: skip
    return tasks, samples
