"""Checkpoint bookkeeping shared by the resumable trainers (ftlab.train, ftlab.llm.train).

A state_dir holds `checkpoint-<step>/` folders; one is complete iff every one of the
trainer's marker files is in it (ftlab_checkpoint.json, written last, plus the trainer state).
A re-run resumes from the newest complete checkpoint when all of them carry its fingerprint,
removing the half-written folders of the killed run; otherwise state_dir is discarded.
When training is done the checkpoints, less their state-only files, are assembled in a temp
sibling of out_dir, renamed to out_dir in one os.rename, and state_dir is deleted.

What differs between trainers is passed in: the marker files, a predicate for half-written
folders, a predicate for state-only files, and the logger (messages keep the trainer's name).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from ftlab.io import read_json

META_FILE = "ftlab_checkpoint.json"
CKPT_RE = re.compile(r"checkpoint-(\d+)")

_log = logging.getLogger("ftlab.checkpointing")


def checkpoint_step(path: Path) -> int:
    """The step in a `checkpoint-<step>` folder's name."""
    return int(CKPT_RE.fullmatch(path.name).group(1))


def complete_checkpoints(state_dir: Path, markers: Iterable[str]) -> dict[int, Path]:
    """step -> dir of every checkpoint in state_dir that holds all the marker files."""
    markers = tuple(markers)
    found = {}
    if state_dir.is_dir():
        for d in state_dir.iterdir():
            m = CKPT_RE.fullmatch(d.name)
            if m and all((d / f).is_file() for f in markers):
                found[int(m.group(1))] = d
    return dict(sorted(found.items()))


def find_resume_point(
    state_dir: Path,
    fingerprint: str,
    *,
    markers: Iterable[str],
    is_partial: Callable[[Path, set[Path]], bool],
    log: logging.Logger = _log,
) -> Path | None:
    """Newest checkpoint of this exact run, or None; stale, foreign or partial state is deleted.

    is_partial(d, complete): whether d, an entry of state_dir, is a checkpoint being written
    when the run was killed (complete: the dirs of the complete checkpoints); such dirs are
    removed when resuming.
    """
    if not state_dir.exists():
        return None
    ckpts = complete_checkpoints(state_dir, markers)
    fingerprints = set()
    for d in ckpts.values():
        try:
            fingerprints.add(read_json(d / META_FILE).get("fingerprint"))
        except (OSError, ValueError):
            fingerprints.add(None)
    if ckpts and fingerprints == {fingerprint}:
        complete = set(ckpts.values())
        for d in state_dir.iterdir():  # checkpoints being written when the run was killed
            if is_partial(d, complete):
                log.info("removing incomplete %s", d)
                shutil.rmtree(d, ignore_errors=True)
        return ckpts[max(ckpts)]
    if ckpts:
        log.warning(
            "discarding %s: its checkpoints belong to a different run (fingerprint mismatch)",
            state_dir,
        )
    else:
        log.info("discarding %s: no complete checkpoint in it", state_dir)
    shutil.rmtree(state_dir)
    return None


def fsync_files(folder: Path) -> None:
    """fsync every file in folder (before a rename or stamp vouches for them)."""
    for f in folder.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other filesystem, or links not supported
        shutil.copy2(src, dst)


def publish_checkpoints(
    out_dir: Path,
    state_dir: Path,
    checkpoints: Iterable[Path],
    *,
    is_state_file: Callable[[str], bool],
    extra_files: dict[str, str],
) -> None:
    """Assemble out_dir in a temp sibling, rename it into place, delete state_dir.

    Each checkpoint dir gets a same-named folder with its files (hardlinks) except the
    state-only ones; extra_files (name -> text, e.g. the training log) go to out_dir's top.
    """
    tmp = out_dir.parent / f".{out_dir.name}.tmp-publish"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in checkpoints:
        dst = tmp / src.name
        dst.mkdir()
        for f in src.iterdir():
            if f.is_file() and not is_state_file(f.name):
                link_or_copy(f, dst / f.name)
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    shutil.rmtree(state_dir)
