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
import json
import logging
import random
import shutil
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from ftlab import checkpointing
from ftlab.device import resolve_device
from ftlab.io import read_json, sha256_file, sha256_json
from ftlab.modeling import build_model, n_params
from ftlab.mtl.early_stopping import EarlyStopping, save_epochs, select, validation_epochs
from ftlab.mtl.surgery import make_combiner, surgery_backward
from ftlab.paths import checkpoint_dirname
from ftlab.tokenizer import build_char_tokenizer
from ftlab.train import (
    STATE_FILE,
    Batches,
    _load_hf,
    _rng_state,
    _set_rng_state,
    encode_rows,
    find_resume_point,
    lr_multiplier,
    read_rows,
    save_checkpoint,
)

log = logging.getLogger("ftlab.mtl.train")

FORMAT_VERSION = 1
MANIFEST = "mtl_manifest.json"
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
    max_epochs = int(training["epochs"])
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
    if resume is not None:
        model, tokenizer = _load_hf(resume)
    else:
        tokenizer = build_char_tokenizer(model_max_length=model_cfg["max_length"])
        torch.manual_seed(seed)
        model = build_model(model_cfg, tokenizer)
    model.to(dev).train()

    rows = read_rows(train_rows)
    val_rows = read_rows(validation_rows)
    if not rows or not val_rows:
        raise ValueError(f"no rows in {train_rows if not rows else validation_rows}")
    task_of = torch.from_numpy(row_tasks(rows, list(tasks)))
    ids, lengths = encode_rows(rows, tokenizer, model.config.max_position_embeddings)
    batches = Batches(ids, lengths, training["batch_size"], seed)
    spe = batches.steps_per_epoch
    total_steps = max_epochs * spe
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(lr_multiplier, warmup=training["warmup_steps"], total=total_steps),
    )
    combiner = make_combiner(method, seed=seed, reduction=reduction)
    stopper = EarlyStopping(**early_stopping)
    val_epochs = set(validation_epochs(max_epochs, validation["every_epochs"], False))
    save_at = set(save_epochs(max_epochs, checkpoints["save_every_epochs"]))
    params = [p for p in model.parameters() if p.requires_grad]
    val_bs = validation["batch_size"]

    def val_value() -> float:
        return validate(model, tokenizer, val_rows, validation["metric"], val_bs)

    step, log_rows, values, saved, elapsed0 = 0, [], {}, [], 0.0
    if resume is not None:
        state = torch.load(resume / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        combiner.load_state_dict(state["combiner"])
        stopper = EarlyStopping.from_state(state["early_stopping"])
        _set_rng_state(state["rng"])
        step, log_rows, elapsed0 = state["step"], state["log_rows"], state["elapsed_s"]
        values = {int(k): v for k, v in state["values"].items()}
        saved = list(state["saved"])
        log.info("resuming %s from step %d (epoch %d)", model_name, step, step // spe)
    else:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        if validation["before_training"]:
            values[0] = val_value()
            stopper.update(0, values[0])
            log.info(
                "epoch 0 (before training): validation %s %.4f", validation["metric"], values[0]
            )
    log.info(
        "%s: %s over %d tasks, %d rows, %d params, up to %d epochs x %d steps, on %s",
        model_name, method, len(tasks), len(rows), n_params(model), max_epochs, spe, dev,
    )  # fmt: skip

    log_every = max(1, int(training.get("log_every") or 1))
    max_grad_norm = training.get("max_grad_norm")
    t0 = time.perf_counter()
    acc = {"loss": 0.0, "n": 0, "tasks": np.zeros(len(tasks)), "task_n": np.zeros(len(tasks))}
    conflicts = 0
    stopped = stopper.stopped_epoch is not None
    while step < total_steps and not stopped:
        step += 1
        batch = batches.get(step)
        task_ids = task_of[batches.indices(step)]
        if dev.type != "cpu":
            batch = {k: v.to(dev) for k, v in batch.items()}
            task_ids = task_ids.to(dev)
        lr = scheduler.get_last_lr()[0]
        row_loss, row_tokens = token_losses(model, batch)
        losses = task_losses(row_loss, row_tokens, task_ids, len(tasks))
        log_now = step % log_every == 0 or step % spe == 0
        stats = surgery_backward(list(losses.values()), params, combiner, stats=log_now)
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        acc["loss"] += float(sum(v.item() for v in losses.values()))
        acc["n"] += 1
        for t, v in losses.items():
            acc["tasks"][t] += v.item()
            acc["task_n"][t] += 1
        if stats is not None and stats.min_cosine is not None:
            conflicts = stats.n_conflicts
        epoch, at_epoch_end = divmod(step, spe)
        at_epoch_end = at_epoch_end == 0
        if log_now:
            row = {
                "step": step,
                "epoch": round(step / spe, 4),
                "loss": round(acc["loss"] / acc["n"], 6),  # sum of task losses, mean over steps
                "lr": lr,
                "conflicts": conflicts if method != "baseline" else "",
                "elapsed_s": round(elapsed0 + time.perf_counter() - t0, 3),
            }
            for t, name in enumerate(tasks):
                if acc["task_n"][t]:
                    row[f"loss_{name}"] = round(acc["tasks"][t] / acc["task_n"][t], 6)
            log_rows.append(row)
            acc = {
                "loss": 0.0,
                "n": 0,
                "tasks": np.zeros(len(tasks)),
                "task_n": np.zeros(len(tasks)),
            }
            log.info("step %d epoch %.2f loss %.4f lr %.3g", step, row["epoch"], row["loss"], lr)
        if not at_epoch_end:
            continue
        if epoch in val_epochs:
            values[epoch] = val_value()
            stopped = stopper.update(epoch, values[epoch])
            log.info(
                "epoch %d: validation %s %.4f (best %.4f at epoch %s, wait %d)%s",
                epoch, validation["metric"], values[epoch], stopper.best, stopper.best_epoch,
                stopper.wait, " -> early stop" if stopped else "",
            )  # fmt: skip
        if epoch in save_at or stopped or step == total_steps:
            if epoch not in values:  # every checkpoint carries its own validation value
                values[epoch] = val_value()
            saved.append(epoch)
            trainer_state = {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "combiner": combiner.state_dict(),
                "early_stopping": stopper.state_dict(),
                "rng": _rng_state(),
                "log_rows": log_rows,
                "values": values,
                "saved": saved,
                "elapsed_s": elapsed0 + time.perf_counter() - t0,
            }
            info = {
                **inputs,
                "fingerprint": fingerprint,
                "step": step,
                "epoch": epoch,
                "validation_value": values[epoch],
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
                "meta": meta or {},
            }
            path = save_checkpoint(state_path, step, model, tokenizer, trainer_state, info)
            log.info("saved %s (epoch %d, validation %.4f)", path, epoch, values[epoch])
            _prune(state_path, saved, values, spe, checkpoints["keep_last"], stopper.mode)

    manifest = _manifest(saved, values, spe, stopper, max_epochs, checkpoints, validation, inputs)
    kept_dirs = [state_path / checkpoint_dirname(c["step"]) for c in manifest["checkpoints"]]
    checkpointing.publish_checkpoints(
        out_path,
        state_path,
        kept_dirs,
        is_state_file=lambda name: name == STATE_FILE,
        extra_files={
            LOG_NAME: _log_csv(log_rows, list(tasks)),
            MANIFEST: _json(manifest),
        },
    )
    log.info(
        "published %s: kept epochs %s, selected epoch %d (%s)",
        out_path, [c["epoch"] for c in manifest["checkpoints"]], manifest["selected"]["epoch"],
        manifest["stop_reason"],
    )  # fmt: skip
    return manifest


def _kept(saved: list[int], values: dict, keep_last: int, mode: str) -> tuple[list[int], int]:
    selected = select({e: values[e] for e in saved}, mode)
    return sorted(set(saved[-keep_last:]) | {selected}), selected


def _prune(state_dir: Path, saved, values, spe, keep_last: int, mode: str) -> None:
    """Delete saved checkpoints that are neither among the newest keep_last nor the best."""
    kept, _ = _kept(saved, values, keep_last, mode)
    for epoch in saved:
        if epoch not in kept:
            d = state_dir / checkpoint_dirname(epoch * spe)
            if d.exists():
                shutil.rmtree(d)
                log.info("removed %s (keep_last)", d)


def _manifest(saved, values, spe, stopper, max_epochs, checkpoints, validation, inputs) -> dict:
    kept, selected = _kept(saved, values, checkpoints["keep_last"], stopper.mode)
    last = saved[-1]
    if stopper.stopped_epoch is not None:
        reason = "early_stopping"
    else:
        reason = "max_epochs"
    return {
        "model_name": inputs["model_name"],
        "method": inputs["method"],
        "seed": inputs["seed"],
        "tasks": inputs["tasks"],
        "steps_per_epoch": spe,
        "max_epochs": max_epochs,
        "last_epoch": last,
        "stop_reason": reason,
        "metric": validation["metric"],
        "mode": stopper.mode,
        "checkpoints": [
            {"step": e * spe, "epoch": e, "validation": values[e], "selected": e == selected}
            for e in kept
        ],
        "selected": {"step": selected * spe, "epoch": selected, "validation": values[selected]},
        "saved_epochs": saved,
        "validations": [{"epoch": e, "value": v} for e, v in stopper.history],
        "best_validation": {"epoch": stopper.best_epoch, "value": stopper.best},
        "early_stopping": {k: inputs["early_stopping"][k] for k in inputs["early_stopping"]},
    }


def _json(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def read_manifest(model_dir: str | Path) -> dict:
    return read_json(Path(model_dir) / MANIFEST)


def kept_steps(model_dir: str | Path) -> list[int]:
    return [c["step"] for c in read_manifest(model_dir)["checkpoints"]]
