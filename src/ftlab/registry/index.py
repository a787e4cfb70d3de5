"""The results index: one SQLite file per study (``results/<study>/index.sqlite``), a cache of
what the result files under ``results/<study>/`` say. The files stay the truth:

- ``refresh(study_dir)`` re-reads only files whose size or mtime changed and drops rows of
  files that are gone, so every ``ftlab`` query starts from an up-to-date index (a stat of each
  result file; ~13k files for the 87-model paper study). ``rebuild`` deletes it and reads all.
- Jobs record their own results when they finish (``record_job``, called by
  ``ftlab.provenance.write_provenance``). Many jobs finishing at once is safe: WAL journal,
  a 120 s busy timeout, and each writer holds the write lock (BEGIN IMMEDIATE) only for its
  own short transaction. A job that still cannot write logs a warning and carries on; the next
  refresh picks its files up. On filesystems where SQLite locking is unreliable (some NFS
  setups) set ``FTLAB_INDEX_FROM_JOBS=0``: only ``ftlab`` (one process) then writes it.
- Training curves: each run's ``models/<model>/training_log.csv`` (every study kind writes one;
  its columns differ by kind) is read like a result file, into one (step, metric, value) row per
  numeric cell of every column but ``step``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from ftlab.paths import PATTERNS
from ftlab.registry.records import (
    CHECKPOINT_RE,
    ResultFileError,
    parse_result,
    split_model,
)

SCHEMA_VERSION = 3  # 2: training curves (table training); 3: mtl_eval.json results read
BUSY_TIMEOUT_S = 120
PROVENANCE = "provenance.json"
CHECKPOINT_META = "ftlab_checkpoint.json"
TRAINING_LOG = Path(PATTERNS["training_log"]).name

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, step INTEGER,
    mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL, model TEXT NOT NULL, grp TEXT NOT NULL, seed INTEGER,
    step INTEGER NOT NULL, source TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, stderr REAL, n INTEGER);
CREATE INDEX IF NOT EXISTS results_metric ON results (metric, task);
CREATE INDEX IF NOT EXISTS results_path ON results (path);
CREATE TABLE IF NOT EXISTS provenance (
    path TEXT PRIMARY KEY, model TEXT NOT NULL, step INTEGER, stage TEXT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    model TEXT PRIMARY KEY, grp TEXT NOT NULL, seed INTEGER, checkpoints TEXT NOT NULL,
    checkpoint_meta TEXT, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS training (
    path TEXT NOT NULL, model TEXT NOT NULL, step INTEGER NOT NULL, metric TEXT NOT NULL,
    value REAL);
CREATE INDEX IF NOT EXISTS training_model ON training (model, metric);
CREATE INDEX IF NOT EXISTS training_path ON training (path);
"""


def index_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / PATTERNS["index"]


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so the write
    # lock is taken before reading what to change and never upgraded mid-transaction (the
    # upgrade is what makes concurrent SQLite writers fail with "database is locked").
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.row_factory = sqlite3.Row
    version = _schema_version(conn)
    if version not in (None, SCHEMA_VERSION):
        # An index of another ftlab version: it is only a cache, so start over.
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return connect(path)
    if version is None:
        conn.execute("BEGIN IMMEDIATE")  # two jobs creating the index at once: one does it
        _create(conn)
        conn.execute("COMMIT")
    return conn


def _create(conn) -> None:
    for statement in filter(str.strip, SCHEMA.split(";")):
        conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def memory_index(study_dir: str | Path) -> tuple[sqlite3.Connection, dict[str, int]]:
    """An index of `study_dir` held in memory, read from every file: the answer when the index
    on disk cannot be written (locked by another process, read-only folder). (connection,
    counts as `refresh` returns them)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    _create(conn)
    return conn, refresh(study_dir, conn)


def _schema_version(conn) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None


# -- what is on disk ------------------------------------------------------------------------
def scan(study_dir: Path) -> dict[str, tuple]:
    """{relative path: (kind, model, step, mtime_ns, size)} of every indexed file: result and
    provenance files under evals/, and per model its directory (checkpoints), provenance and
    training log."""
    found: dict[str, tuple] = {}
    evals = study_dir / "evals"
    for model_entry in _dirs(evals):
        for ckpt in _dirs(Path(model_entry.path)):
            m = CHECKPOINT_RE.match(ckpt.name)
            if not m:
                continue
            found.update(_checkpoint_files(study_dir, Path(ckpt.path), model_entry.name, int(m[1])))
    for model_entry in _dirs(study_dir / "models"):
        found.update(_model_files(Path(model_entry.path), model_entry.name))
    return found


def _model_files(folder: Path, model: str) -> dict[str, tuple]:
    """models/<model>/ itself (its checkpoints), its provenance and its training log."""
    st = folder.stat()
    found = {f"models/{model}": ("run", model, None, st.st_mtime_ns, 0)}
    for name, kind in ((PROVENANCE, "provenance"), (TRAINING_LOG, "training")):
        path = folder / name
        if path.is_file():
            st = path.stat()
            found[f"models/{model}/{name}"] = (kind, model, None, st.st_mtime_ns, st.st_size)
    return found


# Result files one folder down, per eval set (the TIR layout, ftlab.paths "tir_scores"):
# evals/<model>/checkpoint-<step>/<eval_set>/scores.json. Only this name: the other JSON files
# there (generation_info.json) are not results.
SET_RESULT = Path(PATTERNS["tir_scores"]).name


def _checkpoint_files(study_dir: Path, ckpt: Path, model: str, step: int) -> dict[str, tuple]:
    """{relative path: (kind, model, step, mtime_ns, size)} of one evaluated checkpoint's
    result and provenance files, including each eval set folder's scores.json and
    provenance.json."""
    found = {}
    with os.scandir(ckpt) as it:
        entries = sorted(it, key=lambda e: e.name)
    for f in entries:
        if f.name.startswith("."):
            continue
        if f.is_dir():
            for name, kind in ((SET_RESULT, "result"), (PROVENANCE, "provenance")):
                sub = Path(f.path) / name
                if sub.is_file():
                    st = sub.stat()
                    rel = sub.relative_to(study_dir).as_posix()
                    found[rel] = (kind, model, step, st.st_mtime_ns, st.st_size)
            continue
        if not f.name.endswith(".json"):
            continue
        kind = "provenance" if f.name == PROVENANCE else "result"
        st = f.stat()
        found[Path(f.path).relative_to(study_dir).as_posix()] = (
            kind, model, step, st.st_mtime_ns, st.st_size
        )  # fmt: skip
    return found


def _dirs(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(
                (e for e in it if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name
            )
    except FileNotFoundError:
        return []


# -- reading one file into rows ------------------------------------------------------------
def _parse(study_dir: Path, rel: str, kind: str, model: str, step) -> tuple[list, str | None]:
    """(rows for its table, error message or None). A broken file is remembered with its
    error (``ftlab stats`` lists them) instead of stopping the refresh."""
    path = study_dir / rel
    try:
        if kind == "result":
            return parse_result(path), None
        if kind == "provenance":
            return [json.loads(path.read_text())], None
        if kind == "training":
            return parse_training_log(path), None
        return [_run_row(path)], None
    except (ResultFileError, OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return [], str(err)


def parse_training_log(path: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) of every numeric cell of a training_log.csv, columns as written
    (world: epoch, loss, lr, ...; TRL kinds: the Trainer's log history, where eval and summary
    rows leave other columns blank). Blank and non-numeric cells are skipped; NaN is kept (a
    diverged loss is part of the curve). A file without a step column, a row whose step is not
    a whole number or with more cells than the header is malformed (ResultFileError)."""
    try:
        reader = csv.reader(io.StringIO(path.read_text(), newline=""))
        header = next(reader, None)
        if not header or "step" not in header:
            raise ResultFileError(
                f"{path}: not a training log: no 'step' column in its header "
                f"({', '.join(header or []) or 'empty file'})"
            )
        at = header.index("step")
        out = []
        for line, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) > len(header):
                raise ResultFileError(
                    f"{path}: line {line} has {len(cells)} cells, the header {len(header)}"
                )
            step = _number(cells[at]) if at < len(cells) else None
            if step is None or not step.is_integer():
                raise ResultFileError(
                    f"{path}: line {line}: step {cells[at] if at < len(cells) else ''!r} is "
                    "not a whole number"
                )
            for name, cell in zip(header, cells, strict=False):
                value = _number(cell) if name != "step" else None
                if value is not None:
                    out.append((int(step), name, value))
        return out
    except csv.Error as err:
        raise ResultFileError(f"{path}: not readable as CSV ({err})") from None


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:  # blank, or text (a Trainer's string entry)
        return None


def _run_row(model_dir: Path) -> dict:
    steps = sorted(
        int(m[1]) for p in model_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()
    )
    meta = None
    if steps:
        meta_path = model_dir / f"checkpoint-{steps[-1]}" / CHECKPOINT_META
        if meta_path.is_file():
            meta = meta_path.read_text()
    return {"checkpoints": json.dumps(steps), "checkpoint_meta": meta}


def _write(conn, rel: str, info: tuple, rows: list, error: str | None) -> None:
    kind, model, step, mtime_ns, size = info
    grp, seed = split_model(model)
    _forget(conn, rel, kind)
    conn.execute(
        "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rel, kind, model, step, mtime_ns, size, error),
    )
    if kind == "result":
        conn.executemany(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rel,
                    model,
                    grp,
                    seed,
                    step,
                    r["source"],
                    r["task"],
                    r["metric"],
                    r["value"],
                    r["stderr"],
                    r["n"],
                )
                for r in rows
            ],
        )
    elif kind == "provenance" and rows:
        stage = rows[0].get("stage") if isinstance(rows[0], dict) else None
        conn.execute(
            "INSERT OR REPLACE INTO provenance VALUES (?, ?, ?, ?, ?)",
            (rel, model, step, stage, json.dumps(rows[0])),
        )
    elif kind == "training":
        conn.executemany(
            "INSERT INTO training VALUES (?, ?, ?, ?, ?)",
            [(rel, model, st, metric, None if math.isnan(v) else v) for st, metric, v in rows],
        )
    elif kind == "run" and rows:
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            (model, grp, seed, rows[0]["checkpoints"], rows[0]["checkpoint_meta"], rel),
        )


def _forget(conn, rel: str, kind: str) -> None:
    conn.execute("DELETE FROM files WHERE path = ?", (rel,))
    if kind == "result":
        conn.execute("DELETE FROM results WHERE path = ?", (rel,))
    elif kind == "provenance":
        conn.execute("DELETE FROM provenance WHERE path = ?", (rel,))
    elif kind == "training":
        conn.execute("DELETE FROM training WHERE path = ?", (rel,))
    else:
        conn.execute("DELETE FROM runs WHERE path = ?", (rel,))


# -- public operations ---------------------------------------------------------------------
def refresh(study_dir: str | Path, conn: sqlite3.Connection | None = None) -> dict[str, int]:
    """Bring the index of `study_dir` (or the open index `conn`) up to date with its files;
    returns counts of files added/changed, removed and unchanged."""
    study_dir = Path(study_dir)
    if conn is None:
        with closing(connect(index_path(study_dir))) as conn:
            return refresh(study_dir, conn)
    on_disk = scan(study_dir)
    known = {
        r["path"]: (r["kind"], r["mtime_ns"], r["size"])
        for r in conn.execute("SELECT path, kind, mtime_ns, size FROM files")
    }
    changed = [
        rel for rel, info in on_disk.items() if known.get(rel) != (info[0], info[3], info[4])
    ]
    removed = [rel for rel in known if rel not in on_disk]
    parsed = {rel: _parse(study_dir, rel, *on_disk[rel][:3]) for rel in changed}
    if changed or removed:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for rel in removed:
                _forget(conn, rel, known[rel][0])
            for rel in changed:
                _write(conn, rel, on_disk[rel], *parsed[rel])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return {
        "updated": len(changed),
        "removed": len(removed),
        "unchanged": len(on_disk) - len(changed),
    }


def rebuild(study_dir: str | Path) -> dict[str, int]:
    """Delete the index and read every result file again."""
    path = index_path(study_dir)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return refresh(study_dir)


def study_dir_of(path: Path) -> Path:
    """results/<study>/ of a file under evals/ or models/ of that study."""
    path = Path(path).resolve()
    for parent in path.parents:
        if parent.name in ("evals", "models"):
            return parent.parent
    raise ValueError(f"{path} is not under a study's evals/ or models/ folder")


def record_job(provenance_path: str | Path) -> int:
    """Index the files of one finished job: the folder its provenance file is in (an evaluated
    checkpoint's results, or a trained model). Returns how many files were written. Skipped
    (0) when FTLAB_INDEX_FROM_JOBS=0."""
    if os.environ.get("FTLAB_INDEX_FROM_JOBS", "1") == "0":
        return 0
    provenance_path = Path(provenance_path).resolve()
    study_dir = study_dir_of(provenance_path)
    folder = provenance_path.parent
    rel_folder = folder.relative_to(study_dir).as_posix()
    # an eval set's own folder (TIR): its checkpoint's scan, kept to that folder's files
    scanned = folder.parent if _is_eval_set_folder(study_dir, folder) else folder
    entries = {
        rel: info
        for rel, info in _scan_folder(study_dir, scanned).items()
        if rel == rel_folder or rel.startswith(rel_folder + "/")
    }
    parsed = {rel: _parse(study_dir, rel, *info[:3]) for rel, info in entries.items()}
    with closing(connect(index_path(study_dir))) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for rel, info in entries.items():
                _write(conn, rel, info, *parsed[rel])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(entries)


def _is_eval_set_folder(study_dir: Path, folder: Path) -> bool:
    """evals/<model>/checkpoint-<step>/<eval_set>/ (ftlab.paths "tir_eval_provenance")."""
    rel = folder.relative_to(study_dir).parts
    return len(rel) == 4 and rel[0] == "evals" and bool(CHECKPOINT_RE.match(rel[2]))


def _scan_folder(study_dir: Path, folder: Path) -> dict[str, tuple]:
    rel = folder.relative_to(study_dir).parts
    found = {}
    if rel[0] == "evals" and len(rel) == 3 and CHECKPOINT_RE.match(rel[2]):
        step = int(CHECKPOINT_RE.match(rel[2])[1])
        found.update(_checkpoint_files(study_dir, folder, rel[1], step))
    elif rel[0] == "models" and len(rel) == 2:
        found.update(_model_files(folder, rel[1]))
    return found
