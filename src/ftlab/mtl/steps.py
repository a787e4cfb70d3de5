"""One function per stage of a multi-task study (kind: mtl), called by the thin rule scripts
in workflow/scripts/mtl_*.py with the rule's params/input/output, never the whole config."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ftlab.io import read_json, read_jsonl, read_jsonl_texts, write_jsonl, write_jsonl_texts

log = logging.getLogger("ftlab.mtl")


# -- data -------------------------------------------------------------------------------
def make_world_mix(
    split_paths: list[str],
    out_train: str,
    out_validation: str,
    *,
    tasks: list[str],
    n_train: int,
    n_validation: int,
    seed: int,
) -> None:
    """Training mix (the first n_train rows of each task's train split, shuffled together) and
    validation rows (the next n_validation, less any that equal a training row)."""
    from ftlab.world.datasets import make_multitask

    train, val = {}, {}
    for task, path in zip(tasks, split_paths, strict=True):
        rows = read_jsonl_texts(path)
        train[task] = rows[:n_train]
        seen = set(train[task])
        val[task] = [r for r in rows[n_train : n_train + n_validation] if r not in seen]
        if len(val[task]) < n_validation:
            log.warning("%s: %d validation rows duplicated training rows and were dropped",
                        task, n_validation - len(val[task]))  # fmt: skip
    write_jsonl_texts(out_validation, make_multitask(val, seed))
    write_jsonl_texts(out_train, make_multitask(train, seed))
    log.info("mix of %s: %d training, %d validation rows", "+".join(tasks),
             sum(map(len, train.values())), sum(map(len, val.values())))  # fmt: skip


def prepare_task_dataset(
    task: str, out: str, *, spec: dict, seed: int, data_root: str | None = None
) -> None:
    """One sft/grpo training dataset, normalized (ftlab.llm.data rows)."""
    from ftlab.llm.steps import prepare_dataset

    # prepare_dataset writes a test split and a report too; this study validates on held-out
    # train rows (ftlab.mtl.steps.make_llm_mix)
    with tempfile.TemporaryDirectory() as tmp:
        full = {**spec, "test": spec["train"], "test_split": spec["train_split"],
                "limit_test": 1}  # fmt: skip
        prepare_dataset(task, full, data_root, seed, out, str(Path(tmp) / "unused.jsonl"),
                        str(Path(tmp) / "report.json"), section="mtl.datasets")  # fmt: skip


def make_llm_mix(
    task_paths: list[str],
    out_train: str,
    out_validation: str,
    *,
    tasks: list[str],
    n_train: int | None,
    n_validation: int,
    seed: int,
) -> None:
    """Rows of every task with their "task" field; the last n_validation of each validate."""
    import random

    train, val = [], []
    for task, path in zip(tasks, task_paths, strict=True):
        rows = [{**r, "task": task} for r in read_jsonl(path)]
        if len(rows) <= n_validation:
            raise ValueError(
                f"{task}: {len(rows)} rows cannot spare 'mtl.validation.rows_per_task' "
                f"({n_validation}) for validation"
            )
        train += rows[:-n_validation]
        val += rows[-n_validation:]
    random.Random(seed).shuffle(train)
    write_jsonl(out_validation, val)
    write_jsonl(out_train, train)
    log.info("mix of %s: %d training, %d validation rows", "+".join(tasks), len(train), len(val))


# -- training ---------------------------------------------------------------------------
def train_run(
    train_rows: str, validation_rows: str, out_dir: str, state_dir: str, threads: int,
    *, objective: str, **settings,
) -> None:  # fmt: skip
    """One run; settings: ftlab.mtl.settings.training (objective-specific keys included)."""
    if objective == "world":
        from ftlab.mtl.world_train import run_mtl_training as run
    else:
        from ftlab.mtl.trl_train import run_trl_training as run

        settings["objective"] = objective
    run(train_rows=train_rows, validation_rows=validation_rows, out_dir=out_dir,
        state_dir=state_dir, threads=threads, **settings)  # fmt: skip


# -- evaluation -------------------------------------------------------------------------
def evaluate_checkpoint(
    checkpoint: str, test_sets: dict[str, str], out_json: str, out_samples: str, threads: int,
    cache_path: str, *, objective: str, suite: dict, meta: dict, **settings,
) -> None:  # fmt: skip
    from ftlab.mtl import evaluate

    info = read_json(Path(checkpoint) / "ftlab_checkpoint.json")
    meta = {**meta, "epoch": info.get("epoch"), "checkpoint": checkpoint}
    if objective == "world":
        evaluate.evaluate_world(
            checkpoint=checkpoint, suite=suite, test_sets=test_sets, out_json=out_json,
            out_samples=out_samples, threads=threads, meta=meta, **settings,
        )  # fmt: skip
    elif settings.pop("engine", "lm_eval") == "guru":
        from ftlab.mtl.guru_eval import evaluate_guru

        evaluate_guru(
            model_path=checkpoint, suite=suite, test_sets=test_sets, out_json=out_json,
            out_samples=out_samples, meta=meta, threads=threads, **settings,
        )  # fmt: skip
    else:
        evaluate.evaluate_lm_eval(
            model_path=checkpoint, suite=suite, cache_path=cache_path, out_json=out_json,
            out_samples=out_samples, meta=meta, **settings,
        )  # fmt: skip


# -- report -----------------------------------------------------------------------------
def build_report(
    eval_paths: list[str],
    samples_paths: list[str],
    manifest_paths: list[str],
    outputs: dict[str, str],
    *,
    runs: dict,
    domains: dict,
    validation_metric: str,
    study: str,
    confidence: float,
    n_resamples: int,
    seed: int,
    overfit_drop: float,
    overfit_checkpoints: int,
    checkpoint: str = "last",
) -> None:
    from ftlab.io import atomic_write_text
    from ftlab.mtl import analysis, report

    manifests = {Path(p).parent.name: read_json(p) for p in manifest_paths}
    scores = analysis.scores_frame(eval_paths, manifests, runs)
    evolution = analysis.evolution_frame(scores, domains, manifests)
    overfit_runs = analysis.overfitting_runs(evolution, overfit_drop, overfit_checkpoints)
    overfit = analysis.overfitting(evolution, overfit_drop, overfit_checkpoints)
    evolution = evolution.merge(
        overfit_runs[["model", "domain", "peak_epoch", "overfit"]], on=["model", "domain"]
    )
    compared = analysis.compared_steps(manifests, checkpoint)
    pairs = zip(evolution["model"], evolution["step"], strict=True)
    evolution["compared"] = [compared[m] == step for m, step in pairs]
    comparison = analysis.comparison_frame(
        samples_paths, manifests, runs, domains,
        confidence=confidence, n_resamples=n_resamples, seed=seed, checkpoint=checkpoint,
    )  # fmt: skip
    for name, frame in (("scores", scores), ("evolution", evolution), ("comparison", comparison)):
        atomic_write_text(outputs[name], frame.to_csv(index=False))
    report.plot_evolution(evolution, outputs["plot"])
    at_compared = [compared[m] == step for m, step in zip(scores["model"], scores["step"],
                                                           strict=True)]  # fmt: skip
    text = report.markdown(
        study=study, manifests=manifests, comparison=comparison, overfit=overfit,
        overfit_runs=overfit_runs, checkpoint=checkpoint, task_metrics=scores[at_compared],
        confidence=confidence, n_resamples=n_resamples, validation_metric=validation_metric,
        plot_name=Path(outputs["plot"]).stem,
    )  # fmt: skip
    report.write_markdown(outputs["markdown"], text)
    log.info("report: %s", outputs["markdown"])
