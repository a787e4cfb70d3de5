"""Result files of a study written directly, in the exact shapes the evaluations write, with
outcomes chosen by the caller: the planted fixtures of tests/test_registry*.py and the large
studies of benchmarks/status_*.py. No model is trained; nothing here is used by the workflow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ftlab.io import atomic_write_json, write_jsonl


def _ckpt(study_dir: Path, model: str, step: int) -> Path:
    return Path(study_dir) / "evals" / model / f"checkpoint-{step}"


def world_eval(
    study_dir,
    model: str,
    step: int,
    sets: dict[str, tuple[str, Sequence[float]]],
    prompts: Sequence[str] | None = None,
) -> Path:
    """One world-model evaluation job: ``world_eval.json`` + samples, every set of
    {eval_set: (metric, per-row scores)} with one task each."""
    out = _ckpt(study_dir, model, step) / "world_eval.json"
    samples, results = [], []
    for eval_set, (metric, scores) in sets.items():
        task, variant = eval_set.split("__")
        names = prompts or [f"{task}(c_{i:04d})=" for i in range(len(scores))]
        samples += [
            {
                "eval_set": eval_set,
                "prompt": p,
                "target": "0",
                "output": "0",
                "task": task,
                "score": float(s),
                "parsed": True,
            }
            for p, s in zip(names, scores, strict=True)
        ]
        results.append(
            {
                "eval_set": eval_set,
                "task": task,
                "variant": variant,
                "metric": metric,
                "value": sum(scores) / len(scores),
                "n": len(scores),
                "n_unparsable": 0,
            }
        )
    write_jsonl(out.with_name("world_eval.samples.jsonl"), samples)
    atomic_write_json(
        out,
        {
            "model": model,
            "step": step,
            "eval_sets": list(sets),
            "results": results,
            "sets": [{"eval_set": s, "n_rows": len(v[1])} for s, v in sets.items()],
        },
    )
    return out


def lm_eval(study_dir, model: str, step: int, benchmarks: dict[str, tuple[str, Sequence[float]]]):
    """``lm_eval.json`` + samples: {benchmark: (metric, per-doc values)}."""
    out = _ckpt(study_dir, model, step) / "lm_eval.json"
    rows, samples = [], []
    for name, (metric, values) in benchmarks.items():
        rows.append(
            {
                "task": name,
                "metric": metric,
                "value": sum(values) / len(values),
                "stderr": None,
                "n": len(values),
            }
        )
        samples += [
            {
                "benchmark": name,
                "task": name,
                "doc_id": i,
                "filter": "none",
                "prompt": f"q{i}",
                "target": "a",
                "response": "a",
                "metrics": {metric: float(v)},
            }
            for i, v in enumerate(values)
        ]
    write_jsonl(out.with_name("lm_eval.samples.jsonl"), samples)
    atomic_write_json(out, {"model": model, "step": step, "benchmarks": rows, "meta": {}})
    return out


def in_domain(study_dir, model: str, step: int, datasets: dict[str, Sequence[float]]):
    """``in_domain.json`` + samples: {dataset: per-row correctness (0/1)}; partial = correct,
    format = 1."""
    out = _ckpt(study_dir, model, step) / "in_domain.json"
    results, samples = {}, []
    for name, correct in datasets.items():
        n = len(correct)
        results[name] = {
            "accuracy": sum(correct) / n,
            "partial_accuracy": sum(correct) / n,
            "format_accuracy": 1.0,
            "n": n,
        }
        samples += [
            {
                "dataset": name,
                "id": f"{name}-{i}",
                "prompt": f"p{i}",
                "completion": "",
                "answer": "1",
                "correct": float(c),
                "partial": float(c),
                "format": 1.0,
            }
            for i, c in enumerate(correct)
        ]
    write_jsonl(out.with_name("in_domain.samples.jsonl"), samples)
    atomic_write_json(out, {"model": model, "step": step, "datasets": results})
    return out


def trained_model(
    study_dir,
    model: str,
    steps: Sequence[int],
    meta: dict | None = None,
    provenance: dict | None = None,
) -> Path:
    """``models/<model>/checkpoint-<step>/ftlab_checkpoint.json`` for each step (no weights)
    and, optionally, the training's provenance.json."""
    model_dir = Path(study_dir) / "models" / model
    for step in steps:
        ckpt = model_dir / f"checkpoint-{step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "ftlab_checkpoint.json").write_text(
            json.dumps({"model_name": model, "step": step, **(meta or {})})
        )
    if provenance is not None:
        atomic_write_json(model_dir / "provenance.json", provenance)
    return model_dir
