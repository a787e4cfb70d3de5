"""Plain torch training loop (nanoGPT-style) with exact, kill-safe checkpoint/resume.

Layout while training (state_dir = results/<study>/train_state/<model>/):
  checkpoint-<step>/            HF files + ftlab_checkpoint.json + trainer_state.pt
  .tmp-checkpoint-<step>/       a checkpoint being written (renamed when complete)
When finished, out_dir (results/<study>/models/<model>/) is published in one os.rename:
  checkpoint-<step>/            HF files + ftlab_checkpoint.json (no trainer_state.pt)
  training_log.csv              step,epoch,loss,lr,elapsed_s
and state_dir is deleted.

Exact resume: the batch of step s is a pure function of (seed, s) (per-epoch permutations from
a generator seeded by (seed, epoch)), and a checkpoint stores weights, optimizer, scheduler and
all RNG states, so a run killed at any moment and re-run ends with bit-identical weights.

Devices (see ftlab.device): on the CPU (and on a GPU with cuda_graphs off) each step is the
plain eager step above. On a CUDA GPU with cuda_graphs on, the same optimizer steps run through
`CapturedStep`: every training row resident on the GPU at one static width, the batch of step s
gathered on the GPU from the same per-epoch permutation into fixed-shape buffers, fused and
capturable AdamW with the learning rate as a GPU tensor (the same linear warmup/decay values as
the eager LambdaLR), and forward, backward, clipping and the optimizer step captured once as
one CUDA graph and replayed (gpu-notes.md: 4-5x the eager GPU loop for the paper model).
GPU resume is exact up to the GPU's own run-to-run nondeterminism (atomic adds in backward):
same data order, schedule and optimizer state, final metrics equal within float tolerance.

Several processes (a job with resources.train.gpus > 1 or processes > 1, started by
ftlab.launch): DistributedDataParallel, each rank training on its slice of the same global
batch (ftlab.ddp), eager steps, rank 0 writing the checkpoints (same layout) and publishing.
A killed run resumes as above; the result equals a 1-process run up to float summation order.

This module is the entry point (run_training) and the loop; the rest lives in ftlab.batches
(rows, encoding, Batches/StaticBatches), ftlab.train_eager (schedule, eager step),
ftlab.train_graph (CapturedStep), ftlab.train_checkpoints (checkpoint/resume bookkeeping)
and ftlab.train_setup (device, model, data, optimizer and step of a run).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import torch
import transformers

from ftlab import ddp
from ftlab.batches import Batches as Batches
from ftlab.batches import StaticBatches as StaticBatches
from ftlab.batches import encode_rows as encode_rows
from ftlab.batches import epoch_permutation as epoch_permutation
from ftlab.device import use_tf32
from ftlab.io import atomic_write_text, checkpoint_sha256, sha256_file, sha256_json
from ftlab.train_checkpoints import (
    LOG_NAME,
    _log_csv,
    _rng_state,
    checkpoint_info,
    find_resume_point,
    publish_steps,
    save_checkpoint,
)
from ftlab.train_eager import lr_multiplier as lr_multiplier
from ftlab.train_eager import train_step
from ftlab.train_graph import CapturedStep as CapturedStep
from ftlab.train_setup import (
    _log_set_up,
    _Progress,
    _Run,
    _set_up,
    _set_up_device,
    _set_up_step,
)

log = logging.getLogger("ftlab.train")

FORMAT_VERSION = 1  # bump when the meaning of a checkpoint changes (invalidates old state)


def publish(out_dir: Path, state_dir: Path, saved_steps: list[int], log_rows: list[dict]) -> None:
    """Assemble out_dir in a temp sibling (hardlinks, no trainer state), rename, drop state."""
    publish_steps(out_dir, state_dir, saved_steps, {LOG_NAME: _log_csv(log_rows)})
    log.info("published %s (%d checkpoints)", out_dir, len(saved_steps))


def run_training(
    *,
    model_name: str,
    train_rows: str,
    init_checkpoint: str | None,
    model_cfg: dict,
    training: dict,
    seed: int,
    total_steps: int,
    saved_steps: list[int],
    out_dir: str,
    state_dir: str,
    log_path: str | None = None,
    threads: int = 1,
    meta: dict | None = None,
    device: str = "auto",
    precision: str = "fp32",
    cuda_graphs: bool = True,
    tf32: bool = False,
    torch_compile: bool = False,
) -> None:
    """Train (or resume) one model and publish its checkpoints to out_dir.

    training keys: epochs, max_steps, batch_size, lr, weight_decay, warmup_steps, save_every,
    log_every, optional max_grad_norm (default 1.0, as HF Trainer; null disables clipping).
    log_path: the CSV training log; out_dir/training_log.csv is always published, and a
    different log_path receives a copy. Progress goes to the "ftlab.train" logger.
    device: auto | cpu | cuda[:N]; precision: fp32 | bf16 | fp16 (mixed precision) |
    bf16_weights (bf16 compute, fp32 master weights, the static step on any device; see
    ftlab.device); cuda_graphs: on a CUDA device, run the captured fast step (CapturedStep);
    tf32: on a CUDA device, float32 matmuls in TF32 (ftlab.device.use_tf32); torch_compile:
    the static step's model compiled by torch.compile (any device, one process). All are
    recorded in ftlab_checkpoint.json with the GPU's name.
    """
    _run(
        model_name=model_name,
        train_rows=train_rows,
        init_checkpoint=init_checkpoint,
        model_cfg=model_cfg,
        training=training,
        seed=seed,
        total_steps=total_steps,
        saved_steps=saved_steps,
        out_dir=Path(out_dir),
        state_dir=Path(state_dir),
        log_path=Path(log_path) if log_path else None,
        threads=threads,
        meta=meta or {},
        device=device,
        precision=precision,
        cuda_graphs=cuda_graphs,
        tf32=tf32,
        torch_compile=torch_compile,
    )


def _run(*, model_name, train_rows, init_checkpoint, model_cfg, training, seed, total_steps,
         saved_steps, out_dir: Path, state_dir: Path, log_path, threads, meta, device,
         precision, cuda_graphs, tf32, torch_compile) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    dev, world, precision, fast, graphs = _set_up_device(device, precision, cuda_graphs,
                                                         torch_compile)  # fmt: skip
    tf32 = use_tf32(dev, tf32)  # False on the CPU, where it changes nothing
    transformers.utils.logging.disable_progress_bar()  # no shard-writing bars in job logs
    saved = sorted({int(s) for s in saved_steps})
    if not saved or saved[-1] != total_steps or saved[0] < 1:
        raise ValueError(f"saved_steps {saved} must lie in 1..{total_steps} and end with it")

    # Everything that determines the result goes into the fingerprint; paths and threads don't.
    inputs = {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "seed": seed,
        "total_steps": total_steps,
        "saved_steps": saved,
        "model": model_cfg,
        "training": training,
        "init_checkpoint_sha256": checkpoint_sha256(init_checkpoint) if init_checkpoint else None,
        "train_data_sha256": sha256_file(train_rows),
    }
    runtime = {"device": dev.type, "precision": precision, "cuda_graphs": graphs}
    if tf32:  # only when on: GPU runs without it keep their fingerprints
        runtime["tf32"] = True
    if torch_compile:  # other kernels, other float rounding
        runtime["torch_compile"] = True
    if runtime != {"device": "cpu", "precision": "fp32", "cuda_graphs": False}:
        inputs["runtime"] = runtime  # CPU fp32 keeps the fingerprint it always had
    if world.size > 1:  # same rows per step, but float sums in another order
        inputs["processes"] = world.size
    fingerprint = sha256_json(inputs)
    # rank 0 alone may delete stale state; every rank resumes from what it found
    resume = world.main_first(lambda: find_resume_point(state_dir, fingerprint))

    run = _Run(model_name, training, total_steps, dev, world, precision, fast, graphs,
               bool(torch_compile))  # fmt: skip
    progress = _set_up(run, resume, init_checkpoint, model_cfg, train_rows, seed)
    where_info = _log_set_up(run, threads)
    where_info["tf32"] = tf32
    where_info["torch_compile"] = bool(torch_compile)
    _set_up_step(run, progress, seed, where_info)
    save = partial(_save, state_dir=state_dir, inputs=inputs, fingerprint=fingerprint,
                   details={"init_checkpoint": init_checkpoint}, runtime=where_info,
                   meta=meta)  # fmt: skip
    step0, t0 = _train_steps(run, progress, set(saved), save)

    if dev.type == "cuda":
        rate = (progress.step - step0) / max(time.perf_counter() - t0, 1e-9)
        log.info("%s: peak GPU memory %.1f MiB (%s steps/s over this run)", model_name,
                 torch.cuda.max_memory_allocated(dev) / 2**20, f"{rate:.1f}")  # fmt: skip
    world.close()  # every rank has finished its steps (rank 0 its checkpoints)
    if not world.is_main:
        return
    publish(out_dir, state_dir, saved, progress.log_rows)
    if log_path is not None and log_path.resolve() != (out_dir / LOG_NAME).resolve():
        atomic_write_text(log_path, _log_csv(progress.log_rows))


def _train_steps(run: _Run, progress: _Progress, saved: set[int], save) -> tuple[int, float]:
    """The steps after progress.step up to total_steps, with their log rows and checkpoints
    (save); returns the step this process started from and when (perf_counter)."""
    log_every = max(1, int(run.training.get("log_every") or 1))
    t0, step0 = time.perf_counter(), progress.step
    while progress.step < run.total_steps:
        progress.step += 1
        step = progress.step
        lr = _one_step(run, progress, step)
        progress.loss_n = progress.loss_n + 1
        log_now = step % log_every == 0 or step == run.total_steps
        if log_now and run.captured is not None:
            # syncs: elapsed_s below counts the GPU work
            progress.loss_sum = run.captured.take_loss_sum()
        elapsed = progress.elapsed0 + time.perf_counter() - t0
        if log_now:
            _log_row(run, progress, lr, elapsed, rate_since=(step0, t0))
        if step in saved and run.world.is_main:  # replicas are identical: rank 0 writes
            save(run, progress, elapsed)
    return step0, t0


def _one_step(run: _Run, progress: _Progress, step: int) -> float:
    """Optimizer step `step` on the run's path (data-parallel, eager or captured); adds its
    loss to progress.loss_sum (the captured step sums on the device); returns its lr."""
    if run.world.size > 1:
        batch, n_tokens = ddp.shard_batch(run.batches, step, run.world)
        batch = {k: v.to(run.dev, non_blocking=True) for k, v in batch.items()}
        loss, lr = ddp.train_step(
            run.net, run.optimizer, run.scheduler, batch, n_tokens, run.world,
            run.max_grad_norm, amp=None if run.precision == "fp32" else run.amp,
            scaler=run.scaler,
        )  # fmt: skip
    elif run.captured is None:
        batch = run.batches.get(step)
        if run.dev.type != "cpu":
            batch = {k: v.to(run.dev, non_blocking=True) for k, v in batch.items()}
        loss, lr = train_step(
            run.model, run.optimizer, run.scheduler, batch, run.max_grad_norm,
            **({} if run.precision == "fp32" else {"amp": run.amp, "scaler": run.scaler}),
        )  # fmt: skip
    else:
        lr = run.training["lr"] * run.multiplier(step - 1)  # what LambdaLR gives the eager path
        run.captured.run(step, lr)
        return lr
    progress.loss_sum = progress.loss_sum + loss
    return lr


def _log_row(run: _Run, progress: _Progress, lr: float, elapsed: float, rate_since) -> None:
    """The training-log row of progress.step; resets the loss sums."""
    step = progress.step
    row = {
        "step": step,
        "epoch": round(step / run.batches.steps_per_epoch, 4),
        "loss": round(progress.loss_sum / progress.loss_n, 6),  # mean since the last row
        "lr": lr,
        "elapsed_s": round(elapsed, 3),
    }
    progress.log_rows.append(row)
    progress.loss_sum, progress.loss_n = 0.0, 0
    step0, t0 = rate_since
    rate = (step - step0) / max(time.perf_counter() - t0, 1e-9)
    log.info(
        "step %d/%d epoch %.2f loss %.4f lr %.3g (%.1f steps/s)",
        step, run.total_steps, row["epoch"], row["loss"], lr, rate,
    )  # fmt: skip


def _save(run: _Run, progress: _Progress, elapsed: float, *, state_dir: Path, inputs: dict,
          fingerprint: str, details: dict, runtime: dict, meta: dict) -> None:  # fmt: skip
    """Checkpoint of progress.step: weights, trainer state, ftlab_checkpoint.json."""
    step = progress.step
    trainer_state = {
        "step": step,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "rng": _rng_state(),
        "log_rows": progress.log_rows,
        # the fast path sums losses on the device
        "loss_sum": progress.loss_sum
        if run.captured is None
        else float(run.captured.loss_sum.item()),
        "loss_n": progress.loss_n,
        "elapsed_s": elapsed,
    }
    if run.scaler is not None:
        trainer_state["scaler"] = run.scaler.state_dict()
    epoch = round(step / run.batches.steps_per_epoch, 4)
    info = checkpoint_info(inputs, fingerprint, step, epoch, meta, details=details,
                           runtime=runtime)  # fmt: skip
    path = save_checkpoint(state_dir, step, run.model, run.tokenizer, trainer_state, info)
    log.info("saved %s", path)
