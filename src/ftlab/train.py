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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

from ftlab import checkpointing, ddp
from ftlab.checkpointing import META_FILE, fsync_files
from ftlab.device import (
    autocast,
    check_precision,
    device_info,
    grad_scaler,
    resolve_device,
)
from ftlab.io import (
    atomic_write_text,
    checkpoint_sha256,
    read_jsonl_texts,
    sha256_file,
    sha256_json,
)
from ftlab.modeling import build_model, n_params
from ftlab.paths import checkpoint_dirname
from ftlab.tokenizer import build_char_tokenizer, load_tokenizer

log = logging.getLogger("ftlab.train")

FORMAT_VERSION = 1  # bump when the meaning of a checkpoint changes (invalidates old state)
STATE_FILE = "trainer_state.pt"
TMP_PREFIX = ".tmp-"
LOG_NAME = "training_log.csv"
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "elapsed_s")


# -- data ---------------------------------------------------------------------------------------
def read_rows(path: str | Path) -> list[str]:
    """Training rows (the "text" field of each jsonl line)."""
    return read_jsonl_texts(path)


def encode_rows(
    rows: list[str], tokenizer, max_length: int, chunk: int = 1 << 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, L] (uint8) of `<bos> + row + <eos>`, and the true lengths [N].

    Vectorised through a character lookup table instead of calling the tokenizer per row:
    at paper scale (7M rows) Python lists of ids would need ~10 GB. A sample of rows is
    checked against the tokenizer itself, and every character must be in the vocabulary.
    """
    vocab = tokenizer.get_vocab()
    lut = np.full(256, -1, dtype=np.int16)
    for tok, i in vocab.items():
        if len(tok) == 1 and ord(tok) < 128:
            lut[ord(tok)] = i
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if max(vocab.values()) > 255:
        raise ValueError("encode_rows stores ids as uint8; this vocabulary is too large")
    n = len(rows)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n) + 2
    longest = int(lengths.max()) if n else 2
    if longest > max_length:
        i = int(lengths.argmax())
        raise ValueError(f"row {i} is {longest} tokens, over max_length {max_length}: {rows[i]!r}")
    ids = np.full((n, longest), pad, dtype=np.uint8)
    ids[:, 0] = bos
    ids[np.arange(n), lengths - 1] = eos
    for lo in range(0, n, chunk):
        part, lens = rows[lo : lo + chunk], lengths[lo : lo + chunk] - 2
        try:
            codes = lut[np.frombuffer("".join(part).encode("ascii"), dtype=np.uint8)]
        except UnicodeEncodeError:
            codes = None
        row_of = np.repeat(np.arange(len(part)), lens)
        if codes is None or (codes < 0).any():
            bad = next(r for r in part if any(ord(c) > 127 or lut[ord(c)] < 0 for c in r))
            raise ValueError(f"row has characters outside the tokenizer's vocabulary: {bad!r}")
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        ids[lo + row_of, np.arange(len(codes)) - starts + 1] = codes
    for i in range(min(n, 64)):  # the lookup table must agree with the real tokenizer
        expected = tokenizer(rows[i])["input_ids"] + [eos]
        if ids[i, : lengths[i]].tolist() != expected:
            raise ValueError(f"tokenizer does not map row {i} to one token per character")
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Row order of one epoch; depends only on (seed, epoch), so resume needs no data state."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batches:
    """Batch of any step: epoch = (step-1) // steps_per_epoch, consecutive slices of its order."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int, seed: int):
        self.ids, self.lengths, self.batch_size, self.seed = ids, lengths, batch_size, seed
        self.steps_per_epoch = math.ceil(len(ids) / batch_size)
        self._perm: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        """Row indices of the batch of `step` (multi-task training looks up their tasks)."""
        epoch, b = divmod(step - 1, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, len(self.ids)))
        return torch.from_numpy(self._perm[1][b * self.batch_size : (b + 1) * self.batch_size])

    def get(self, step: int) -> dict[str, torch.Tensor]:
        return self.collate(self.indices(step))

    def collate(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of rows `idx` (a data-parallel rank collates its slice of a step's rows)."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        input_ids = self.ids[idx, :width].long()
        attention_mask = torch.arange(width)[None, :] < lengths[:, None]
        labels = input_ids.masked_fill(~attention_mask, -100)  # loss on every real token
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.long(),
            "labels": labels,
        }


class StaticBatches:
    """The batches of `Batches` in fixed-shape buffers on `device` (the fast GPU path).

    All rows and lengths live on the device; `load(step)` copies the row indices of step s
    (the same per-epoch permutation as Batches, so the same rows) into a static index buffer,
    and `tensors()` gathers them at the full static width. A short last batch of an epoch is
    filled up to batch_size with row 0 marked invalid: its labels are all -100, so the loss
    (a mean over real tokens) and the gradients are those of the short batch. Right padding
    carries label -100 too and, the model being causal, no real token attends to it, so no
    attention mask is needed. Runs on any device; only the graph capture needs CUDA.
    """

    def __init__(self, ids, lengths, batch_size: int, seed: int, device):
        self.device = torch.device(device)
        self.ids = ids.to(self.device)  # uint8 [N, W]: ids.long() happens per batch
        self.lengths = lengths.to(self.device)
        self.width = int(ids.shape[1])
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = math.ceil(len(ids) / batch_size)
        self.positions = torch.arange(self.width, device=self.device)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.valid = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        self._n_valid = batch_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def load(self, step: int) -> None:
        """Fill the static buffers with the batch of `step` (device copies, no host sync)."""
        epoch, b = divmod(step - 1, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            perm = epoch_permutation(self.seed, epoch, len(self.ids))
            self._perm = (epoch, torch.from_numpy(perm).to(self.device))
        part = self._perm[1][b * self.batch_size : (b + 1) * self.batch_size]
        n = len(part)
        self.idx[:n].copy_(part, non_blocking=True)
        if n != self._n_valid:
            self.idx[n:].zero_()
            self.valid[:n].fill_(True)
            self.valid[n:].fill_(False)
            self._n_valid = n

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) [batch_size, width] of the loaded batch, from the buffers."""
        input_ids = self.ids[self.idx].long()
        real = self.positions[None, :] < self.lengths[self.idx][:, None]
        labels = input_ids.masked_fill(~(real & self.valid[:, None]), -100)
        return input_ids, labels


# -- schedule -----------------------------------------------------------------------------------
def lr_multiplier(i: int, warmup: int, total: int) -> float:
    """LambdaLR factor for the optimizer step with index i (0-based).

    Linear warmup reaching the peak at step `warmup` (never a wasted lr=0 first step), then
    linear decay that reaches 0 at `total`.
    """
    if i < warmup:
        return (i + 1) / warmup
    return max(0.0, (total - i) / max(1, total - warmup))


# -- checkpoints --------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def complete_checkpoints(state_dir: Path) -> dict[int, Path]:
    """step -> dir of every fully written checkpoint in state_dir (temp dirs are ignored)."""
    return checkpointing.complete_checkpoints(state_dir, (META_FILE, STATE_FILE))


def find_resume_point(state_dir: Path, fingerprint: str) -> Path | None:
    """Newest checkpoint of this exact run, or None; stale or foreign state is deleted."""
    return checkpointing.find_resume_point(
        state_dir,
        fingerprint,
        markers=(META_FILE, STATE_FILE),
        is_partial=lambda d, complete: d.name.startswith(TMP_PREFIX),
        log=log,
    )


def save_checkpoint(
    state_dir: Path, step: int, model, tokenizer, trainer_state: dict, info: dict
) -> Path:
    """Write checkpoint-<step> into a temp dir, then rename it: it exists only when complete."""
    final = state_dir / checkpoint_dirname(step)
    tmp = state_dir / f"{TMP_PREFIX}{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(trainer_state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(_json(info))
    fsync_files(tmp)  # the rename below must never publish data still in flight
    if final.exists():  # only after a resume at this very step; same content
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def _json(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _log_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def publish(out_dir: Path, state_dir: Path, saved_steps: list[int], log_rows: list[dict]) -> None:
    """Assemble out_dir in a temp sibling (hardlinks, no trainer state), rename, drop state."""
    publish_steps(out_dir, state_dir, saved_steps, {LOG_NAME: _log_csv(log_rows)})
    log.info("published %s (%d checkpoints)", out_dir, len(saved_steps))


def publish_steps(out_dir: Path, state_dir: Path, steps, extra_files: dict[str, str]) -> None:
    """Publish the checkpoints of `steps` (without trainer state) and extra_files (name ->
    text) as out_dir, then drop state_dir (ftlab.checkpointing.publish_checkpoints)."""
    checkpointing.publish_checkpoints(
        out_dir,
        state_dir,
        [state_dir / checkpoint_dirname(step) for step in steps],
        is_state_file=lambda name: name == STATE_FILE,
        extra_files=extra_files,
    )


def checkpoint_info(
    inputs: dict, fingerprint: str, step: int, epoch, meta: dict, *,
    details: dict | None = None, runtime: dict | None = None,
) -> dict:  # fmt: skip
    """ftlab_checkpoint.json of a checkpoint: the fingerprinted inputs, where the run stands,
    the trainer's details, when and with which versions it was written, the device used."""
    return {
        **inputs,
        "fingerprint": fingerprint,
        "step": step,
        "epoch": epoch,
        **(details or {}),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        **(runtime or {}),
        "meta": meta,
    }


def _load_hf(path: str | Path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = load_tokenizer(path)
    return model, tokenizer


# -- the loop -----------------------------------------------------------------------------------
def train_step(
    model, optimizer, scheduler, batch: dict, max_grad_norm: float | None,
    *, amp=nullcontext, scaler=None,
):  # fmt: skip
    """One eager optimizer step; returns (loss, lr used).

    amp: a factory of the forward pass's autocast context; scaler: the fp16 GradScaler.
    With the defaults (fp32) this is exactly the CPU step the exact-resume guarantee is about.
    """
    lr = scheduler.get_last_lr()[0]
    with amp():
        loss = model(**batch, use_cache=False).loss
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
    optimizer_update(model.parameters(), optimizer, scheduler, max_grad_norm, scaler)
    return loss.item(), lr


def optimizer_update(params, optimizer, scheduler, max_grad_norm, scaler=None) -> None:
    """After the backward pass: clip the gradients of params (when max_grad_norm; unscaled
    first with an fp16 scaler), step the optimizer (through the scaler) and the schedule, and
    clear the gradients. Shared by the eager step and the multi-task trainer."""
    if scaler is not None and max_grad_norm:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class CapturedStep:
    """The whole optimizer step on static buffers, captured as one CUDA graph (gpu-notes.md).

    Forward (attention_mask=None, use_cache=False), backward, gradient clipping
    (foreach, no host sync), optional fp16 loss scaling and the fused capturable AdamW step
    are recorded once and replayed per step; between replays only the batch indices
    (`data.load`) and the learning rate tensor change. Warm-up iterations on a side stream
    precede the capture; they run with lr 0, and the parameters, optimizer state and loss
    scaler are restored afterwards, so they leave no trace in the training.

    `graph=False` (or a capture that fails) runs the same body eagerly each step: same
    static shapes and arithmetic, no graph (this path also runs on the CPU, which the tests
    use to check it against the plain eager step).
    """

    WARMUP = 3

    def __init__(self, model, optimizer, data: StaticBatches, max_grad_norm, *, lr: torch.Tensor,
                 precision: str = "fp32", scaler=None, graph: bool = True):  # fmt: skip
        self.model, self.optimizer, self.data = model, optimizer, data
        self.max_grad_norm, self.lr, self.scaler = max_grad_norm, lr, scaler
        self.precision, self.device = precision, data.device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graph = None
        self.loss = None  # the last step's loss (a device tensor)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        if graph:
            self._capture()

    def _body(self) -> torch.Tensor:
        opt, scaler = self.optimizer, self.scaler
        opt.zero_grad(set_to_none=False)  # gradient buffers keep their addresses
        input_ids, labels = self.data.tensors()
        with autocast(self.device, self.precision, graph_safe=self.graph is not None):
            loss = self.model(input_ids=input_ids, labels=labels, use_cache=False).loss
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            if self.max_grad_norm:
                scaler.unscale_(opt)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        return loss.detach()

    def _snapshot(self) -> dict:
        state = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                 for p, s in self.optimizer.state.items()}  # fmt: skip
        scaler = None
        if self.scaler is not None and self.scaler._scale is not None:
            scaler = (self.scaler._scale.clone(), self.scaler._growth_tracker.clone())
        return {
            "params": [p.detach().clone() for p in self.params],
            "state": state,
            "scaler": scaler,
            "lr": self.lr.clone(),
        }

    @torch.no_grad()
    def _restore(self, snap: dict) -> None:
        for p, saved in zip(self.params, snap["params"], strict=True):
            p.copy_(saved)
        for p, s in self.optimizer.state.items():  # created by the warm-up: back to fresh
            saved = snap["state"].get(id(p), {})
            for k, v in s.items():
                if not torch.is_tensor(v):
                    continue
                if k in saved:
                    v.copy_(saved[k])
                else:
                    v.zero_()
        if self.scaler is not None and self.scaler._scale is not None:
            if snap["scaler"] is None:  # not used before: its initial (or loaded) state
                self.scaler._scale.fill_(self.scaler._init_scale)
                self.scaler._growth_tracker.fill_(self.scaler._init_growth_tracker)
            else:
                self.scaler._scale.copy_(snap["scaler"][0])
                self.scaler._growth_tracker.copy_(snap["scaler"][1])
        self.lr.copy_(snap["lr"])
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def _capture(self) -> None:
        snap = self._snapshot()
        self.lr.zero_()  # warm-up steps must not move the weights
        self.data.load(1)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.graph = graph  # _body sees it: autocast without its cast cache
            with torch.cuda.graph(graph):
                self.loss = self._body()
        except Exception as err:  # noqa: BLE001 - any capture failure: run the same step eagerly
            self.graph = None
            log.warning("CUDA graph capture failed (%s: %s); running the step eagerly",
                        type(err).__name__, err)  # fmt: skip
        torch.cuda.synchronize(self.device)
        self._restore(snap)

    def run(self, step: int, lr: float) -> None:
        """Optimizer step `step` at learning rate lr; its loss is added to loss_sum."""
        self.data.load(step)
        self.lr.fill_(lr)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.loss = self._body()
        self.loss_sum += self.loss

    def take_loss_sum(self) -> float:
        """Sum of the losses since the last call (one host sync), then reset."""
        value = self.loss_sum.item()
        self.loss_sum.zero_()
        return value


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
) -> None:
    """Train (or resume) one model and publish its checkpoints to out_dir.

    training keys: epochs, max_steps, batch_size, lr, weight_decay, warmup_steps, save_every,
    log_every, optional max_grad_norm (default 1.0, as HF Trainer; null disables clipping).
    log_path: the CSV training log; out_dir/training_log.csv is always published, and a
    different log_path receives a copy. Progress goes to the "ftlab.train" logger.
    device: auto | cpu | cuda[:N]; precision: fp32 | bf16 | fp16 (mixed precision, see
    ftlab.device); cuda_graphs: on a CUDA device, run the captured fast step (CapturedStep).
    All three are recorded in ftlab_checkpoint.json with the GPU's name.
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
    )


def _run(*, model_name, train_rows, init_checkpoint, model_cfg, training, seed, total_steps,
         saved_steps, out_dir: Path, state_dir: Path, log_path, threads, meta, device,
         precision, cuda_graphs) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    dev, world, precision, fast = _set_up_device(device, precision, cuda_graphs)
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
    runtime = {"device": dev.type, "precision": precision, "cuda_graphs": fast}
    if runtime != {"device": "cpu", "precision": "fp32", "cuda_graphs": False}:
        inputs["runtime"] = runtime  # CPU fp32 keeps the fingerprint it always had
    if world.size > 1:  # same rows per step, but float sums in another order
        inputs["processes"] = world.size
    fingerprint = sha256_json(inputs)
    # rank 0 alone may delete stale state; every rank resumes from what it found
    resume = world.main_first(lambda: find_resume_point(state_dir, fingerprint))

    run = _Run(model_name, training, total_steps, dev, world, precision, fast)
    progress = _set_up(run, resume, init_checkpoint, model_cfg, train_rows, seed)
    where_info = _log_set_up(run, threads)
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


@dataclass
class _Run:
    """What one run of the world-model trainer trains with (filled in by the set-up)."""

    model_name: str
    training: dict
    total_steps: int
    dev: torch.device
    world: ddp.World
    precision: str
    fast: bool  # the captured step (CapturedStep), else the eager one
    model: Any = None
    net: Any = None  # DDP around the model with several processes, the model itself otherwise
    tokenizer: Any = None
    batches: Batches | None = None
    rows: int = 0
    optimizer: Any = None
    scheduler: Any = None  # None on the captured path, which applies lr_multiplier itself
    lr_tensor: torch.Tensor | None = None  # the captured path's lr (a device tensor)
    scaler: Any = None  # the fp16 GradScaler, or None
    multiplier: Callable[[int], float] | None = None
    captured: CapturedStep | None = None  # the fast path's step
    amp: Callable | None = None  # the eager paths' autocast factory

    @property
    def max_grad_norm(self):
        return self.training.get("max_grad_norm", 1.0)


@dataclass
class _Progress:
    """Where a run stands after `step` optimizer steps (what trainer_state.pt stores)."""

    step: int = 0
    log_rows: list[dict] = field(default_factory=list)
    loss_sum: float = 0.0  # since the last log row (the fast path sums on the device)
    loss_n: int = 0
    elapsed0: float = 0.0  # elapsed_s of the steps before this process (a resume)


def _set_up_device(device: str, precision: str, cuda_graphs: bool):
    """(device, world, precision, whether the captured fast path runs)."""
    dev = resolve_device(device)
    world = ddp.World.from_env(dev)  # several processes when launched (ftlab.launch)
    dev = world.device(dev)
    precision = check_precision(precision)
    # The captured step has no gradient all-reduce: data-parallel runs take the eager step.
    fast = bool(cuda_graphs) and dev.type == "cuda" and world.size == 1
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # graph capture and streams use the current device
    return dev, world, precision, fast


def load_or_build_model(resume: Path | None, init_checkpoint, model_cfg: dict, seed: int, dev):
    """(model in train mode on dev, tokenizer): the checkpoint resumed from, else
    init_checkpoint, else a new model of model_cfg with the char tokenizer."""
    if resume is not None:
        model, tokenizer = _load_hf(resume)
    elif init_checkpoint:
        model, tokenizer = _load_hf(init_checkpoint)
    else:
        tokenizer = build_char_tokenizer(model_max_length=model_cfg["max_length"])
        torch.manual_seed(seed)  # the base model's init depends on the training seed only
        model = build_model(model_cfg, tokenizer)
    model.to(dev).train()
    return model, tokenizer


def make_batches(rows: list[str], tokenizer, model, batch_size: int, seed: int) -> Batches:
    """The encoded rows as the batches of every step."""
    ids, lengths = encode_rows(rows, tokenizer, model.config.max_position_embeddings)
    return Batches(ids, lengths, batch_size, seed)


def seed_everything(seed: int) -> None:
    """The RNG states of a run started from scratch (a resumed run restores its own)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_trainer_state(resume: Path, optimizer, scheduler, map_location=None) -> dict:
    """trainer_state.pt of the checkpoint `resume`, its optimizer and scheduler (when there
    is one) state already loaded; the caller restores the rest, then the RNG states."""
    state = torch.load(resume / STATE_FILE, weights_only=False, map_location=map_location)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state


def _set_up(run: _Run, resume, init_checkpoint, model_cfg, train_rows, seed) -> _Progress:
    """Model, data, optimizer and schedule of the run; the progress resumed, or step 0."""
    training, dev = run.training, run.dev
    run.model, run.tokenizer = load_or_build_model(resume, init_checkpoint, model_cfg, seed, dev)
    run.net = ddp.wrap(run.model, run.world, dev)  # the model itself in a single process

    rows = read_rows(train_rows)
    if not rows:
        raise ValueError(f"no training rows in {train_rows}")
    run.rows = len(rows)
    run.batches = make_batches(rows, run.tokenizer, run.model, training["batch_size"], seed)
    run.multiplier = partial(lr_multiplier, warmup=training["warmup_steps"], total=run.total_steps)
    _make_optimizer(run)
    run.scaler = grad_scaler(dev, run.precision)
    if resume is None:
        seed_everything(seed)
        log.info("starting %s from scratch (step 0 of %d)", run.model_name, run.total_steps)
        return _Progress()
    # CPU: loaded as saved; GPU: via the CPU, so a resume on another GPU index works
    # (load_state_dict moves the optimizer state onto the parameters' device).
    where = None if dev.type == "cpu" else "cpu"
    state = load_trainer_state(resume, run.optimizer, run.scheduler, map_location=where)
    if run.lr_tensor is not None:  # the saved group holds a copy of the lr tensor: use ours
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr_tensor
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    progress = _Progress(state["step"], state["log_rows"], state["loss_sum"], state["loss_n"],
                         state["elapsed_s"])  # fmt: skip
    log.info("resuming from step %d of %d (%s)", progress.step, run.total_steps, resume)
    return progress


def _make_optimizer(run: _Run) -> None:
    training, model = run.training, run.model
    if run.fast:  # fused + capturable AdamW; lr a device tensor the captured step reads
        run.lr_tensor = torch.tensor(float(training["lr"]), dtype=torch.float32, device=run.dev)
        run.optimizer = torch.optim.AdamW(
            model.parameters(), lr=run.lr_tensor, weight_decay=training["weight_decay"],
            fused=True, capturable=True,
        )  # fmt: skip
    else:
        run.optimizer = torch.optim.AdamW(
            model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"],
            **({"fused": True} if run.dev.type == "cuda" else {}),
        )  # fmt: skip
        run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, run.multiplier)


def _log_set_up(run: _Run, threads: int) -> dict:
    """Log what trains where; returns the device info the checkpoints record."""
    where_info = device_info(run.dev, run.precision)
    log.info(
        "%s: %d rows, %d params, %d steps (%d/epoch), batch %d, threads %d, on %s %s, %s",
        run.model_name, run.rows, n_params(run.model), run.total_steps,
        run.batches.steps_per_epoch, run.training["batch_size"], threads, run.dev,
        where_info["gpu_name"] or "", run.precision,
    )  # fmt: skip

    world = run.world
    if world.size > 1:
        log.info("data parallel: rank %d of %d, %d rows per rank and step", world.rank,
                 world.size, math.ceil(run.training["batch_size"] / world.size))  # fmt: skip
    return where_info


def _set_up_step(run: _Run, progress: _Progress, seed: int, where_info: dict) -> None:
    """The captured step on the fast path, else the eager paths' autocast factory."""
    if run.fast:
        batches = run.batches
        static = StaticBatches(batches.ids, batches.lengths, run.training["batch_size"], seed,
                               run.dev)  # fmt: skip
        run.captured = CapturedStep(
            run.model, run.optimizer, static, run.max_grad_norm, lr=run.lr_tensor,
            precision=run.precision, scaler=run.scaler, graph=True,
        )  # fmt: skip
        run.captured.loss_sum.fill_(progress.loss_sum)  # from the checkpoint (0 when fresh)
        where_info["cuda_graphs"] = run.captured.graph is not None
    else:
        where_info["cuda_graphs"] = False
        run.amp = partial(autocast, run.dev, run.precision)


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
