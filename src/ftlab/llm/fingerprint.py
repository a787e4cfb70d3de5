"""Which model a cached answer or a result file belongs to."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftlab.io import checkpoint_sha256


def model_fingerprint(model: str) -> str:
    """Identity of the model whose answers a cache row holds.

    A local directory: ``checkpoint_sha256`` (weights, config, tokenizer; run metadata
    excluded), so a copied or re-published checkpoint keeps its cached answers. A hub id:
    sha256 of ``id@commit``, the commit the local HF cache resolves ``main`` to, else (not
    downloaded yet, online) the hub's current commit of ``main``, which the download that
    follows fetches: so a first run that is killed and resumed after the download keeps its
    key (the cache, the teacher's shards). Limitation: offline and not cached, only the id is
    hashed (the model cannot load then either); pin local dirs to be exact.
    """
    path = Path(model)
    if path.is_dir():
        return checkpoint_sha256(path)
    commit = _hub_commit(model)
    return hashlib.sha256(f"hub:{model}@{commit or ''}".encode()).hexdigest()


def _hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not cached, offline, not a repo id: ask the hub below
        pass
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        return HfApi().model_info(repo_id, timeout=30).sha
    except Exception:  # unreachable, not a repo id: the id alone
        return None


def model_identity(model: str, model_hash: str, meta: dict) -> dict:
    """The leading fields of a result file: which model (and step) it describes."""
    return {
        "model": meta.get("model", model),  # the study's name for it when given
        "model_path": model,
        "model_sha256": model_hash,
        "step": meta.get("step"),
    }
