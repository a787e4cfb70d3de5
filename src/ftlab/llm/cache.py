"""Per-sample result cache for LLM evaluation: one sqlite row per model request.

An evaluation that times out or is killed resumes where it stopped: every answered request is
committed as its chunk finishes, so a SIGKILL loses at most the chunk in flight. The key is
``<checkpoint hash>/<task>/<request hash>``: the checkpoint's content hash is part of the key (not
only of the file name), so two checkpoints never share answers even if they share a cache file,
and one file can hold a whole sweep (``count(prefix=...)`` tells how far each checkpoint got).

Storage: stdlib sqlite3 in WAL mode (readers never block the writer; a crashed writer leaves the
last committed transaction intact). WAL needs shared memory next to the file, which some network
file systems (NFS, some Lustre setups) do not provide; there sqlite may refuse WAL and the cache
falls back to the default rollback journal, which is still crash safe but slower. Prefer one cache
file per checkpoint (or node-local disk) when several jobs would write one file at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Generous: several Snakemake jobs may append to one file; a writer holds the lock for one chunk.
BUSY_TIMEOUT_S = 120.0


def _json_default(obj: Any):
    """Deterministic JSON for request arguments (bytes and odd objects by content/str)."""
    if isinstance(obj, bytes | bytearray):
        return {"__bytes_sha256__": hashlib.sha256(bytes(obj)).hexdigest()}
    if isinstance(obj, set | frozenset):
        return sorted(map(str, obj))
    return str(obj)


def request_fingerprint(request_type: str, args: Any) -> str:
    """sha256 of a request's type and arguments (context, continuation or generation kwargs)."""
    blob = json.dumps(
        [request_type, args], sort_keys=True, separators=(",", ":"), default=_json_default
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_key(ckpt_hash: str, task: str, request: Any) -> str:
    """Cache key of one request of `task` answered by the checkpoint with hash `ckpt_hash`.

    `request` is an lm-eval ``Instance`` (its ``request_type`` and ``args`` are hashed) or a
    ``(request_type, args)`` pair. The generation kwargs are part of a generate_until request's
    args, so a change of ``max_gen_toks`` or stop strings never reuses an old answer.
    """
    if hasattr(request, "request_type") and hasattr(request, "args"):
        rtype, args = request.request_type, request.args
    else:
        rtype, args = request
    if not ckpt_hash or "/" in ckpt_hash:
        raise ValueError(f"bad checkpoint hash {ckpt_hash!r}")
    return f"{ckpt_hash}/{task}/{request_fingerprint(rtype, args)}"


class SampleCache:
    """A persistent key -> JSON value map; every ``put``/``put_many`` is its own transaction.

    Values must be JSON-serialisable; tuples come back as lists (callers restore them).
    Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # WAL + synchronous=NORMAL: a committed row survives a process kill (the WAL is in the
        # OS page cache); only a power loss could drop the last transactions.
        self.journal_mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM samples WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """{key: value} for the keys present (queried in slices: sqlite limits parameters)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT key, value FROM samples WHERE key IN ({marks})", part
            ).fetchall()
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Insert or replace all items in one committed transaction."""
        rows = [(k, json.dumps(v)) for k, v in items]
        if not rows:
            return
        with self._db:  # not autocommit inside: BEGIN ... COMMIT (or ROLLBACK on error)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO samples (key, value) VALUES (?, ?)", rows)

    def __contains__(self, key: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM samples WHERE key = ?", (key,)).fetchone() is not None
        )

    def count(self, prefix: str = "") -> int:
        """Number of rows whose key starts with `prefix` (e.g. a checkpoint hash + "/")."""
        if not prefix:
            return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        # Range query instead of LIKE: no escaping of % and _ in task names needed.
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = "SELECT COUNT(*) FROM samples WHERE key >= ? AND key < ?"
        return self._db.execute(sql, (prefix, hi)).fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SampleCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
