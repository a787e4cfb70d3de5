"""Checkpoint/resume bookkeeping of the world-model trainer (ftlab.train), shared with the
multi-task trainer (ftlab.mtl.world_train): RNG states, writing, finding and publishing
checkpoints, their ftlab_checkpoint.json, and loading a model or trainer state to resume."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

from ftlab import checkpointing
from ftlab.checkpointing import META_FILE, fsync_files
from ftlab.modeling import build_model
from ftlab.paths import checkpoint_dirname
from ftlab.tokenizer import build_char_tokenizer, load_tokenizer

log = logging.getLogger("ftlab.train")

STATE_FILE = "trainer_state.pt"
TMP_PREFIX = ".tmp-"
LOG_NAME = "training_log.csv"
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "elapsed_s")


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
