"""Small shared file helpers: atomic writes and content hashes.

Every result file is written to a temporary sibling first and then renamed into place, so a
reader (or Snakemake after a crash) never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ftlab.paths import atomic_target

# Files of a checkpoint directory that describe the run rather than the model; they are left
# out of the checkpoint's content hash (ftlab_checkpoint.json carries a timestamp).
NON_MODEL_FILES = frozenset({"ftlab_checkpoint.json", "trainer_state.pt"})


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary sibling, fsync it, then os.replace() it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling for writers that take a path (plots, archives): it is renamed onto
    `path` when the block succeeds and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Write one line per item (newline-terminated), atomically."""
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_jsonl(path: str | Path, rows: Iterable, **dumps_kwargs) -> None:
    """One JSON value per line (UTF-8, not ASCII-escaped), atomically."""
    atomic_write_lines(path, (json.dumps(r, ensure_ascii=False, **dumps_kwargs) for r in rows))


def read_jsonl(path: str | Path) -> list:
    """Every non-blank line of a jsonl file, parsed; a bad line is named by file and number."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON: {e}") from e
    return rows


write_json = atomic_write_json  # the name the workflow steps use


def read_json(path: str | Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | Path, exclude: Iterable[str] = ()) -> str:
    """Hash of a directory's regular files: relative names and contents, in sorted order.

    Names listed in `exclude` (base names, at any depth) are skipped.
    """
    root = Path(path)
    skip = set(exclude)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def checkpoint_sha256(path: str | Path) -> str:
    """Content hash of a checkpoint's model files (weights, config, tokenizer).

    Identical for the copy in train_state/ and the published one, and stable across re-runs
    that produce the same weights (run metadata such as timestamps is excluded).
    """
    return sha256_dir(path, exclude=NON_MODEL_FILES)


def sha256_json(obj) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no spaces)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_jsonl_texts(path: str | Path) -> list[str]:
    """The "text" field of every line: the world-model study's row files."""
    return [row["text"] for row in read_jsonl(path)]


def write_jsonl_texts(path: str | Path, texts: Iterable[str]) -> None:
    """One ``{"text": row}`` object per line, atomically (a failed write leaves no file)."""
    write_jsonl(path, ({"text": t} for t in texts))
