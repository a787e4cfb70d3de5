"""A checkpoint's weight files: saved in bf16, and deleted once every evaluation exists.

Disk is what seed 003's cluster runs out of: a 1.7B model is 6.9 GB per checkpoint in float32,
3.4 GB in bf16, and a study keeps 100+ checkpoints. ``cast_checkpoint`` rewrites the floating
point tensors of a checkpoint's ``*.safetensors`` files in another dtype (each file replaced
atomically; casting a file already in that dtype is a no-op, so an interrupted cast is finished
by running it again). ``delete_weights`` removes the weight files of a checkpoint whose
evaluations are all written (policy ``llm.delete_weights``) and leaves a record of what was
deleted (names, sizes, sha256 of the weights, the time) so the checkpoint stays identifiable.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from ftlab.io import atomic_write_json, checkpoint_sha256, read_json

log = logging.getLogger("ftlab.llm.weights")

DELETED_RECORD = "weights_deleted.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16"}


def weight_files(ckpt: str | Path) -> list[Path]:
    ckpt = Path(ckpt)
    files = [p for p in ckpt.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    files = [p for p in files if p.name not in {"training_args.bin"}]  # not weights
    return sorted(files)


def cast_checkpoint(ckpt: str | Path, dtype: str) -> bool:
    """Cast the floating point tensors of `ckpt`'s safetensors files to `dtype` in place; True
    when any file changed. config.json's dtype says what the weights now are."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype not in DTYPES:
        raise ValueError(f"unknown checkpoint dtype {dtype!r}; expected one of {list(DTYPES)}")
    target = getattr(torch, dtype)
    ckpt, changed = Path(ckpt), False
    for path in sorted(ckpt.glob("*.safetensors")):
        tensors = load_file(str(path))
        if all(t.dtype == target or not t.is_floating_point() for t in tensors.values()):
            continue
        cast = {k: (t.to(target) if t.is_floating_point() else t) for k, t in tensors.items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(cast, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
        changed = True
    config = ckpt / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        key = "dtype" if "dtype" in cfg or "torch_dtype" not in cfg else "torch_dtype"
        if cfg.get(key) != dtype:
            cfg[key] = dtype
            atomic_write_json(config, cfg)
    return changed


def delete_weights(ckpt: str | Path, reason: str) -> dict:
    """Delete `ckpt`'s weight files, keeping config, tokenizer and metadata, and record it.
    Idempotent: a checkpoint already released is left as it is."""
    ckpt = Path(ckpt)
    record_path = ckpt / DELETED_RECORD
    if record_path.is_file():
        return read_json(record_path)
    files = weight_files(ckpt)
    record = {
        "checkpoint_sha256": checkpoint_sha256(ckpt),  # the identity its results carry
        "files": {p.name: p.stat().st_size for p in files},
        "deleted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": reason,
    }
    atomic_write_json(record_path, record)  # first: a kill mid-way still leaves the record
    for path in files:
        path.unlink()
    for name in WEIGHT_INDEXES:
        (ckpt / name).unlink(missing_ok=True)
    freed = sum(record["files"].values())
    log.info("deleted the weights of %s (%.2f GB): %s", ckpt, freed / 1e9, reason)
    return record


def weights_deleted(ckpt: str | Path) -> dict | None:
    """The deletion record of a released checkpoint, or None."""
    path = Path(ckpt) / DELETED_RECORD
    return read_json(path) if path.is_file() else None
