"""Multi-task training of a world model on the geometry tasks with early stopping.

The project's trainer (ftlab.train) supplies everything but the loop: the char tokenizer and
model, row encoding, the per-step batches (a pure function of (seed, step)), the linear
warmup/decay schedule, kill-safe checkpoints and their fingerprinted resume, publishing. What
is added here:
- the task of every row, from its prompt prefix (`dist(` -> distance; ftlab.world.tasks), and
  per-task losses per batch: the mean token cross-entropy over that task's rows (tasks absent
  from a batch have no loss that step);
- one update from those losses through a gradient-surgery combiner (ftlab.mtl.surgery:
  baseline = their plain sum, pcgrad), then clipping, AdamW, the schedule;
- validation at scheduled epochs feeding early stopping (ftlab.mtl.early_stopping), checkpoints
  every save_every epochs and at the last epoch trained, pruned to the newest keep_last plus the
  best-validated one while training;
- out_dir/mtl_manifest.json: the kept checkpoints (step, epoch, validation value), the selected
  one, why and when training ended, every validation.

Steps are counted as in ftlab.train (steps_per_epoch = ceil(rows / batch_size)); the schedule
decays to 0 at max_epochs, so an early stop ends part-way down the decay (as a run cut short).
Exact resume as ftlab.train: a checkpoint stores weights, optimizer, scheduler, RNG states, the
combiner's order generator and the early-stopping state; a killed run re-run ends identical.
Validation metric `score`: mean reward of greedy answers on the validation rows (per-sample
reward in [0, 1] from the evaluator's scores, ftlab.mtl.evaluate.world_reward; the analogue of
seed 000's validation reward mean, mode max); `loss`: mean token cross-entropy (mode min).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from ftlab.batches import Batches, encode_rows, make_batches, read_rows
from ftlab.device import resolve_device
from ftlab.io import sha256_file, sha256_json
from ftlab.modeling import n_params
from ftlab.mtl.early_stopping import EarlyStopping, kept_checkpoints, save_epochs, validation_epochs
from ftlab.mtl.manifest import MANIFEST, build_manifest, manifest_text
from ftlab.mtl.surgery import make_combiner, surgery_backward
from ftlab.paths import checkpoint_dirname
from ftlab.train_checkpoints import (
    _rng_state,
    _set_rng_state,
    checkpoint_info,
    find_resume_point,
    load_or_build_model,
    load_trainer_state,
    publish_steps,
    save_checkpoint,
    seed_everything,
)
from ftlab.train_eager import lr_multiplier, optimizer_update

log = logging.getLogger("ftlab.mtl.train")

FORMAT_VERSION = 1
LOG_NAME = "training_log.csv"


def row_tasks(rows: list[str], tasks: list[str]) -> np.ndarray:
    """Index into `tasks` of each row's task (its prompt prefix); an unknown task is an error."""
    from ftlab.world.tasks import task_of_row

    index = {t: i for i, t in enumerate(tasks)}
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        name = task_of_row(row).name
        if name not in index:
            raise ValueError(f"row {i} is a {name!r} row, not one of the study's tasks {tasks}")
        out[i] = index[name]
    return out


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropies, number of predicted tokens) per row [B]; the
    model's own loss (HF shift + mean) is their total sum / total count."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    labels = batch["labels"][:, 1:]
    ce = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    real = labels != -100
    return (ce * real).sum(1), real.sum(1)


def task_losses(row_loss: torch.Tensor, row_tokens: torch.Tensor, task_ids: torch.Tensor, n: int):
    """{task index: mean token loss over the batch rows of that task} for tasks present."""
    out = {}
    for t in range(n):
        mask = task_ids == t
        if bool(mask.any()):
            out[t] = row_loss[mask].sum() / row_tokens[mask].sum()
    return out


@torch.no_grad()
def validate(model, tokenizer, rows: list[str], metric: str, batch_size: int) -> float:
    """Validation value of the current weights (model left in train mode)."""
    model.eval()
    try:
        if metric == "score":
            from ftlab.evaluate import evaluate_set
            from ftlab.mtl.evaluate import mean_reward

            samples, _ = evaluate_set(model, tokenizer, "validation", rows, batch_size)
            return mean_reward(samples)
        ids, lengths = encode_rows(rows, tokenizer, model.config.max_position_embeddings)
        total, count = 0.0, 0
        for lo in range(0, len(rows), batch_size):
            idx = torch.arange(lo, min(lo + batch_size, len(rows)))
            width = int(lengths[idx].max())
            input_ids = ids[idx, :width].long().to(model.device)
            mask = (torch.arange(width)[None, :] < lengths[idx][:, None]).to(model.device)
            batch = {
                "input_ids": input_ids,
                "attention_mask": mask.long(),
                "labels": input_ids.masked_fill(~mask, -100),
            }
            loss, n = token_losses(model, batch)
            total, count = total + float(loss.sum()), count + int(n.sum())
        return total / count
    finally:
        model.train()


def _log_csv(rows: list[dict], tasks: list[str]) -> str:
    cols = ["step", "epoch", "loss", *(f"loss_{t}" for t in tasks), "conflicts", "lr", "elapsed_s"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_mtl_training(
    *,
    model_name: str,
    train_rows: str,
    validation_rows: str,
    tasks: list[str],
    method: str,
    reduction: str,
    model_cfg: dict,
    training: dict,
    validation: dict,
    early_stopping: dict,
    checkpoints: dict,
    seed: int,
    out_dir: str,
    state_dir: str,
    threads: int = 1,
    device: str = "cpu",
    meta: dict | None = None,
) -> dict:
    """Train (or resume) one multi-task run and publish its kept checkpoints; returns the
    manifest. training: epochs (the maximum), batch_size, lr, weight_decay, warmup_steps,
    max_grad_norm, log_every; validation: every_epochs, before_training, metric, batch_size;
    early_stopping: enabled, min_epochs, patience, min_delta, mode; checkpoints: save_every_epochs,
    keep_last."""
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    dev = resolve_device(device)
    out_path, state_path = Path(out_dir), Path(state_dir)
    inputs = {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "seed": seed,
        "tasks": list(tasks),
        "method": method,
        "reduction": reduction,
        "model": model_cfg,
        "training": training,
        "validation": validation,
        "early_stopping": early_stopping,
        "checkpoints": checkpoints,
        "train_data_sha256": sha256_file(train_rows),
        "validation_data_sha256": sha256_file(validation_rows),
        "device": dev.type,
    }
    fingerprint = sha256_json(inputs)
    resume = find_resume_point(state_path, fingerprint)
    run = _set_up(inputs, fingerprint, dev, resume, train_rows, validation_rows)
    if resume is not None:
        _resume(run, resume)
    else:
        _start(run)
    _train(run, state_path, meta or {})
    return _publish(run, out_path, state_path)


@dataclass
class _MtlRun:
    """One multi-task run: what it trains with, and where it stands (what a checkpoint
    stores besides the weights, optimizer, scheduler, combiner and RNG states)."""

    inputs: dict  # the fingerprinted arguments (training, validation, ... as given)
    fingerprint: str
    dev: torch.device
    model: Any
    tokenizer: Any
    n_rows: int
    val_rows: list[str]
    task_of: torch.Tensor  # task index of every training row
    batches: Batches
    optimizer: torch.optim.Optimizer
    scheduler: Any
    combiner: Any
    stopper: EarlyStopping
    val_epochs: set[int]
    save_at: set[int]  # the epochs checkpointed whatever happens
    params: list[torch.Tensor]
    step: int = 0
    log_rows: list[dict] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)  # validation value of each epoch
    saved: list[int] = field(default_factory=list)  # epochs checkpointed, in order
    elapsed0: float = 0.0  # elapsed_s of the steps before this process (a resume)

    @property
    def tasks(self) -> list[str]:
        return self.inputs["tasks"]

    @property
    def spe(self) -> int:
        return self.batches.steps_per_epoch

    @property
    def max_epochs(self) -> int:
        return int(self.inputs["training"]["epochs"])

    @property
    def total_steps(self) -> int:
        return self.max_epochs * self.spe

    def val_value(self) -> float:
        v = self.inputs["validation"]
        return validate(self.model, self.tokenizer, self.val_rows, v["metric"], v["batch_size"])


def _set_up(inputs: dict, fingerprint: str, dev, resume, train_rows, validation_rows) -> _MtlRun:
    """Model, data, optimizer, schedule, combiner and early stopping of a run at step 0."""
    seed, training, tasks = inputs["seed"], inputs["training"], inputs["tasks"]
    model, tokenizer = load_or_build_model(resume, None, inputs["model"], seed, dev)
    rows = read_rows(train_rows)
    val_rows = read_rows(validation_rows)
    if not rows or not val_rows:
        raise ValueError(f"no rows in {train_rows if not rows else validation_rows}")
    task_of = torch.from_numpy(row_tasks(rows, list(tasks)))
    batches = make_batches(rows, tokenizer, model, training["batch_size"], seed)
    max_epochs = int(training["epochs"])
    total_steps = max_epochs * batches.steps_per_epoch
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(lr_multiplier, warmup=training["warmup_steps"], total=total_steps),
    )
    combiner = make_combiner(inputs["method"], seed=seed, reduction=inputs["reduction"])
    stopper = EarlyStopping(**inputs["early_stopping"])
    every = inputs["validation"]["every_epochs"]
    val_epochs = set(validation_epochs(max_epochs, every, False))
    save_at = set(save_epochs(max_epochs, inputs["checkpoints"]["save_every_epochs"]))
    params = [p for p in model.parameters() if p.requires_grad]
    return _MtlRun(inputs, fingerprint, dev, model, tokenizer, len(rows), val_rows, task_of,
                   batches, optimizer, scheduler, combiner, stopper, val_epochs, save_at,
                   params)  # fmt: skip


def _resume(run: _MtlRun, resume: Path) -> None:
    state = load_trainer_state(resume, run.optimizer, run.scheduler)
    run.combiner.load_state_dict(state["combiner"])
    run.stopper = EarlyStopping.from_state(state["early_stopping"])
    _set_rng_state(state["rng"])
    run.step, run.log_rows, run.elapsed0 = state["step"], state["log_rows"], state["elapsed_s"]
    run.values = {int(k): v for k, v in state["values"].items()}
    run.saved = list(state["saved"])
    log.info("resuming %s from step %d (epoch %d)", run.inputs["model_name"], run.step,
             run.step // run.spe)  # fmt: skip


def _start(run: _MtlRun) -> None:
    seed_everything(run.inputs["seed"])
    if run.inputs["validation"]["before_training"]:
        run.values[0] = run.val_value()
        run.stopper.update(0, run.values[0])
        log.info("epoch 0 (before training): validation %s %.4f",
                 run.inputs["validation"]["metric"], run.values[0])  # fmt: skip


def _train(run: _MtlRun, state_dir: Path, meta: dict) -> None:
    """The steps up to the last epoch or an early stop: log rows, validations, checkpoints."""
    inputs, training = run.inputs, run.inputs["training"]
    log.info(
        "%s: %s over %d tasks, %d rows, %d params, up to %d epochs x %d steps, on %s",
        inputs["model_name"], inputs["method"], len(run.tasks), run.n_rows,
        n_params(run.model), run.max_epochs, run.spe, run.dev,
    )  # fmt: skip
    log_every = max(1, int(training.get("log_every") or 1))
    max_grad_norm = training.get("max_grad_norm")
    t0 = time.perf_counter()
    sums = _LossSums(len(run.tasks))
    conflicts = 0
    stopped = run.stopper.stopped_epoch is not None
    while run.step < run.total_steps and not stopped:
        run.step += 1
        step = run.step
        log_now = step % log_every == 0 or step % run.spe == 0
        lr, losses, stats = _train_step(run, step, max_grad_norm, stats=log_now)
        sums.add(losses)
        if stats is not None:  # a step with one task present has 0 conflicts, not the last
            conflicts = stats.n_conflicts
        epoch, at_epoch_end = divmod(step, run.spe)
        at_epoch_end = at_epoch_end == 0
        if log_now:
            elapsed = run.elapsed0 + time.perf_counter() - t0
            _log_row(run, sums, lr, conflicts, elapsed)
            sums = _LossSums(len(run.tasks))
        if not at_epoch_end:
            continue
        stopped = _validate_epoch(run, epoch)
        if epoch in run.save_at or stopped or step == run.total_steps:
            if epoch not in run.values:  # every checkpoint carries its own validation value
                run.values[epoch] = run.val_value()
            run.saved.append(epoch)
            _save(run, epoch, run.elapsed0 + time.perf_counter() - t0, state_dir, meta)


def _train_step(run: _MtlRun, step: int, max_grad_norm, stats: bool):
    """One update from the per-task losses of the batch of `step` through the combiner;
    returns (lr used, {task index: loss}, the surgery's stats when asked for)."""
    batch = run.batches.get(step)
    task_ids = run.task_of[run.batches.indices(step)]
    if run.dev.type != "cpu":
        batch = {k: v.to(run.dev) for k, v in batch.items()}
        task_ids = task_ids.to(run.dev)
    lr = run.scheduler.get_last_lr()[0]
    row_loss, row_tokens = token_losses(run.model, batch)
    losses = task_losses(row_loss, row_tokens, task_ids, len(run.tasks))
    surgery = surgery_backward(list(losses.values()), run.params, run.combiner, stats=stats)
    optimizer_update(run.params, run.optimizer, run.scheduler, max_grad_norm)
    return lr, losses, surgery


class _LossSums:
    """Losses summed over the steps since the last log row: their total, and per task."""

    def __init__(self, n_tasks: int):
        self.loss, self.n = 0.0, 0
        self.tasks, self.task_n = np.zeros(n_tasks), np.zeros(n_tasks)

    def add(self, losses: dict) -> None:
        self.loss += float(sum(v.item() for v in losses.values()))
        self.n += 1
        for t, v in losses.items():
            self.tasks[t] += v.item()
            self.task_n[t] += 1


def _log_row(run: _MtlRun, sums: _LossSums, lr: float, conflicts: int, elapsed: float) -> None:
    row = {
        "step": run.step,
        "epoch": round(run.step / run.spe, 4),
        "loss": round(sums.loss / sums.n, 6),  # sum of task losses, mean over steps
        "lr": lr,
        "conflicts": conflicts if run.inputs["method"] != "baseline" else "",
        "elapsed_s": round(elapsed, 3),
    }
    for t, name in enumerate(run.tasks):
        if sums.task_n[t]:
            row[f"loss_{name}"] = round(sums.tasks[t] / sums.task_n[t], 6)
    run.log_rows.append(row)
    log.info("step %d epoch %.2f loss %.4f lr %.3g", run.step, row["epoch"], row["loss"], lr)


def _validate_epoch(run: _MtlRun, epoch: int) -> bool:
    """Validate at the end of `epoch` when scheduled; whether early stopping ends the run."""
    if epoch not in run.val_epochs:
        return False
    run.values[epoch] = run.val_value()
    stopped = run.stopper.update(epoch, run.values[epoch])
    stopper = run.stopper
    log.info(
        "epoch %d: validation %s %.4f (best %.4f at epoch %s, wait %d)%s",
        epoch, run.inputs["validation"]["metric"], run.values[epoch], stopper.best,
        stopper.best_epoch, stopper.wait, " -> early stop" if stopped else "",
    )  # fmt: skip
    return stopped


def _save(run: _MtlRun, epoch: int, elapsed: float, state_dir: Path, meta: dict) -> None:
    """Checkpoint of the end of `epoch`, then the pruning to keep_last + the best."""
    trainer_state = {
        "step": run.step,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "combiner": run.combiner.state_dict(),
        "early_stopping": run.stopper.state_dict(),
        "rng": _rng_state(),
        "log_rows": run.log_rows,
        "values": run.values,
        "saved": run.saved,
        "elapsed_s": elapsed,
    }
    info = checkpoint_info(run.inputs, run.fingerprint, run.step, epoch, meta,
                           details={"validation_value": run.values[epoch]})  # fmt: skip
    path = save_checkpoint(state_dir, run.step, run.model, run.tokenizer, trainer_state, info)
    log.info("saved %s (epoch %d, validation %.4f)", path, epoch, run.values[epoch])
    keep_last = run.inputs["checkpoints"]["keep_last"]
    _prune(state_dir, run.saved, run.values, run.spe, keep_last, run.stopper.mode)


def _publish(run: _MtlRun, out_dir: Path, state_dir: Path) -> dict:
    """Publish the kept checkpoints, the training log and the manifest; returns the manifest."""
    inputs = run.inputs
    manifest = build_manifest(run.saved, run.values, run.spe, run.stopper, run.max_epochs,
                              inputs["checkpoints"], inputs["validation"], inputs)  # fmt: skip
    publish_steps(
        out_dir,
        state_dir,
        [c["step"] for c in manifest["checkpoints"]],
        {LOG_NAME: _log_csv(run.log_rows, list(run.tasks)), MANIFEST: manifest_text(manifest)},
    )
    log.info(
        "published %s: kept epochs %s, selected epoch %d (%s)",
        out_dir, [c["epoch"] for c in manifest["checkpoints"]], manifest["selected"]["epoch"],
        manifest["stop_reason"],
    )  # fmt: skip
    return manifest


def _prune(state_dir: Path, saved, values, spe, keep_last: int, mode: str) -> None:
    """Delete saved checkpoints that are neither among the newest keep_last nor the best."""
    kept, _ = kept_checkpoints(saved, values, keep_last, mode)
    for epoch in saved:
        if epoch not in kept:
            d = state_dir / checkpoint_dirname(epoch * spe)
            if d.exists():
                shutil.rmtree(d)
                log.info("removed %s (keep_last)", d)
