"""Per-sample result cache for LLM evaluation: one sqlite row per model request.

An evaluation that times out or is killed resumes where it stopped: every answered request is
committed as its chunk finishes, so a SIGKILL loses at most the chunk in flight. The key is
``<model identity>/<task>/<request hash>``. The model identity is the checkpoint's content hash
plus the backend, the model arguments (dtype among them), the device type and the configured
batch size (``lm_eval_runner.cache_identity``), so two checkpoints, or one checkpoint in bf16
and in fp32, on GPU and CPU, or in other batches, never share answers.

One file per checkpoint (``eval_cache/<model>/checkpoint-<step>.sqlite``): each file has exactly
one writer, the checkpoint's evaluation job. A job with several processes (data parallel,
``ftlab.launch``) keeps that rule: every rank reads the merged file read-only and writes its
new answers to a file of its own (``checkpoint-<step>.rank<k>.sqlite``); rank 0 merges the rank
files into the checkpoint's file when the ranks are done, and at the start of every run (a
killed run leaves its rank files behind; their answers are kept whatever the new process
count). Keys are the same as with one process, so the merged file is the 1-process file.

SQLite's locking (WAL needs shared memory next to the file) is unsafe on NFS and many Lustre
setups when jobs on several nodes write one file; with one writer per file nothing is ever
written concurrently. The file uses WAL where the file system allows it (readers never block
the writer; a crashed writer leaves the last committed transaction intact) and falls back to
the rollback journal elsewhere.

``CachedLM`` puts the cache in front of an lm-eval model: every request it is asked goes
through ``SampleCache`` first, and only the missing ones reach the wrapped model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from ftlab.llm.genbatch import hflm_generation_batch
from ftlab.llm.ranks import Ranks

log = logging.getLogger("ftlab.llm.evaluate")

# Generous: several Snakemake jobs may append to one file; a writer holds the lock for one chunk.
BUSY_TIMEOUT_S = 120.0
GENERATION_BATCH_MODES = ("auto", "detect")
# lm_eval.generation_cache: the KV cache HF `generate` keeps (lm-eval's default: dynamic)
GENERATION_CACHES = ("dynamic", "static")
DEFAULT_CHUNK = 512  # requests per model call; the most a kill can lose
# Test hook: exit abruptly (no cleanup, like SIGKILL) after this many committed chunks.
CRASH_ENV = "FTLAB_EVAL_CRASH_AFTER_CHUNKS"
CRASH_EXIT_CODE = 75


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

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if readonly:  # another process owns the file: no pragma, no table creation, no write
            uri = self.path.absolute().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
            self.journal_mode = None
            return
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

    def items(self) -> dict[str, Any]:
        """Every row, {key: value} (tests, merges)."""
        rows = self._db.execute("SELECT key, value FROM samples").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def merge_from(self, other: str | Path) -> int:
        """Copy every row of the cache file `other` into this one (one transaction); the
        number of rows copied."""
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            n = self._db.execute("SELECT COUNT(*) FROM other.samples").fetchone()[0]
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR REPLACE INTO samples SELECT key, value FROM other.samples"
                )
        finally:
            self._db.execute("DETACH DATABASE other")
        return n

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


# -- several processes: one cache file per rank, merged by rank 0 -------------------------------
def rank_path(path: str | Path, rank: int) -> Path:
    """The cache file rank `rank` writes in a job with several processes."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def rank_files(path: str | Path) -> list[Path]:
    """The rank files of the cache file `path` on disk (not their -wal / -shm companions)."""
    path = Path(path)
    pat = re.compile(re.escape(path.stem) + r"\.rank\d+" + re.escape(path.suffix) + "$")
    return sorted(p for p in path.parent.glob(f"{path.stem}.rank*") if pat.fullmatch(p.name))


def merge_rank_files(path: str | Path) -> int:
    """Merge every rank file of `path` into it, then delete them; the rows merged. A kill
    between the commit and the deletion only makes the next merge copy the rows again."""
    n = 0
    files = rank_files(path)
    if not files:
        return 0
    with SampleCache(path) as cache:
        for f in files:
            n += cache.merge_from(f)
    for f in files:
        for p in (f, f.with_name(f.name + "-wal"), f.with_name(f.name + "-shm")):
            p.unlink(missing_ok=True)
    if files:
        log.info("merged %d answers from %d rank files into %s", n, len(files), path)
    return n


class RankCache:
    """One rank's cache in a job with several processes: reads the merged file (read-only,
    nobody writes it while the ranks run) and its own rank file; writes the rank file only."""

    def __init__(self, path: str | Path, rank: int):
        self.merged = SampleCache(path, readonly=True)
        self.own = SampleCache(rank_path(path, rank))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found = self.merged.get_many(keys)
        found.update(self.own.get_many(k for k in keys if k not in found))
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        self.own.put_many(items)

    def close(self) -> None:
        self.merged.close()
        self.own.close()


@contextmanager
def open_cache(path: str | Path, ranks: Ranks | None = None) -> Iterator[SampleCache | RankCache]:
    """The cache a process reads and writes. One process: the checkpoint's file itself, after
    merging the rank files a killed multi-process run left. Several: rank 0 first merges
    them, then each rank gets a RankCache; when every rank is done (a barrier), rank 0 merges
    the rank files. A rank that fails leaves its rank file for the next run."""
    if ranks is None or ranks.world_size == 1:
        merge_rank_files(path)  # a killed multi-process run's answers
        with SampleCache(path) as cache:
            yield cache
        return
    if ranks.main:
        merge_rank_files(path)
        SampleCache(path).close()  # the file the others open read-only exists from here on
    ranks.barrier()
    cache = RankCache(path, ranks.rank)
    try:
        yield cache
    finally:
        cache.close()
    ranks.barrier()
    if ranks.main:
        merge_rank_files(path)
    ranks.barrier()  # the merged file is complete for every rank from here on


def crash_limit() -> int | None:
    """The test hook's chunk count ($FTLAB_EVAL_CRASH_AFTER_CHUNKS), or None."""
    env = os.environ.get(CRASH_ENV)
    return int(env) if env else None


def crash_if_due(n_committed: int, limit: int | None) -> None:
    """Exit like a SIGKILL (no cleanup) once `limit` chunks are committed (test hook)."""
    if limit and n_committed >= limit:
        os._exit(CRASH_EXIT_CODE)


# -- the lm-eval model in front of the cache ---------------------------------------------------
def _is_sampling(request) -> bool:
    """Sampled generations are not cached (repeats must differ), as in lm-eval's CachingLM."""
    args = request.args
    return (
        request.request_type == "generate_until"
        and len(args) > 1
        and isinstance(args[1], dict)
        and bool(args[1].get("do_sample", False))
    )


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def aligned_chunk(chunk_size: int, batch_size) -> int:
    """Requests per model call for generation: the most whole batches a chunk holds, so no
    call ends in a short batch that costs a full-length generation of its own (541 IFEval
    prompts at batch 63 in chunks of 512 make 10 batches, in chunks of 504 9). A batch
    larger than the chunk leaves the chunk as it is: the chunk bounds what a kill loses."""
    if not _positive_int(batch_size):
        return chunk_size
    return batch_size * (chunk_size // batch_size) or chunk_size


def _length_proxy(request) -> int:
    return sum(len(a) for a in request.args if isinstance(a, str))


def _restore(reqtype: str, value):
    """JSON turns (logprob, is_greedy) into a list; lm-eval's consumers expect the tuple."""
    if reqtype == "loglikelihood" and isinstance(value, list):
        return tuple(value)
    return value


class CachedLM(LM):
    """An lm-eval ``LM`` that answers requests from a ``SampleCache`` and computes the rest.

    Like lm-eval's CachingLM, but keyed by (model fingerprint, task, request) and incremental:
    missing requests go to the wrapped model in chunks of ``chunk_size``, and each chunk's
    answers are committed before the next chunk starts. Missing requests are sorted longest
    first (as HFLM sorts within a call) so chunks batch well; answers return in request order.
    Identical requests in one call are computed once. ``n_cached`` counts requests answered
    without a model call, ``n_computed`` those sent to the model.

    With HFLM and ``batch_size="auto"`` the batch size is detected on the first chunk of a
    call (the longest requests) and kept for the following chunks: re-detecting per chunk would
    cost several full-size forward passes each time. ``generation_batch_size`` sets the
    generate_until batch: "auto" (with ``batch_size="auto"``) estimates it from the KV cache on
    a CUDA device (ftlab.llm.genbatch; lm-eval's detection elsewhere), "detect" keeps lm-eval's
    detection, an integer fixes it. ``generation_cache`` "static" makes HF ``generate`` (the
    wrapped HFLM's model) preallocate its KV cache for prompt + max_gen_toks instead of growing
    it by concatenation each step ("dynamic", lm-eval's default); on a CUDA device transformers
    then compiles the decoding step (CUDA graphs), a new graph per batch shape.

    Several processes (`ranks`): the rank and world size lm-eval shards documents by, and its
    gathers, are this class's (torch.distributed, global ranks); the wrapped model runs as a
    single-process model on its rank's device, so it never enters a collective that a rank
    whose answers are all cached would not join.
    """

    def __init__(
        self,
        lm: LM,
        cache: SampleCache | RankCache,
        model_hash: str,
        chunk_size: int = DEFAULT_CHUNK,
        crash_after_chunks: int | None = None,
        ranks: Ranks | None = None,
        generation_batch_size: int | str = "auto",
        generation_cache: str = "dynamic",
    ):
        super().__init__()
        if generation_cache not in GENERATION_CACHES:
            raise ValueError(f"lm_eval.generation_cache: {generation_cache!r} is not one of "
                             f"{GENERATION_CACHES}")  # fmt: skip
        self.generation_cache = generation_cache
        gbs = generation_batch_size
        if not _positive_int(gbs) and gbs not in GENERATION_BATCH_MODES:
            raise ValueError(
                f"lm_eval.generation_batch_size: {generation_batch_size!r} is not a positive "
                f"integer or one of {GENERATION_BATCH_MODES}"
            )
        self.generation_batch_size = generation_batch_size
        self.ranks = ranks or Ranks()
        self.lm = lm
        self.cache = cache
        self.model_hash = model_hash
        self.chunk_size = max(1, int(chunk_size))
        self.crash_after_chunks = crash_after_chunks or crash_limit()
        self.n_cached = 0
        self.n_computed = 0
        self.n_chunks = 0
        self.batch_sizes_used: dict[str, Any] = {}

    # Everything but the three request methods is the wrapped model's (tokenizer, config, ...).
    def __getattr__(self, name: str):
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

    @property
    def rank(self) -> int:
        return self.ranks.rank if self.ranks.world_size > 1 else self.lm.rank

    @property
    def world_size(self) -> int:
        return self.ranks.world_size if self.ranks.world_size > 1 else self.lm.world_size

    def all_gather(self, tensor):
        return self.ranks.all_gather(tensor) if self.ranks.world_size > 1 else tensor

    def gather_object(self, obj, dst=0):
        return self.ranks.gather(obj, dst) if self.ranks.world_size > 1 else [obj]

    def barrier(self) -> None:
        self.ranks.barrier()

    @property
    def device(self):
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return self.lm.tokenizer_name

    def chat_template(self, chat_template: bool | str = False):
        return self.lm.chat_template(chat_template)

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        return self.lm.apply_chat_template(chat_history, add_generation_prompt)

    def loglikelihood(self, requests):
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests):
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests):
        with self._kv_cache():
            return self._answer("generate_until", requests)

    @contextmanager
    def _kv_cache(self):
        """The configured KV cache for the wrapped HF model's `generate`, restored after."""
        if self.generation_cache == "dynamic":
            yield
            return
        config = getattr(getattr(self.lm, "model", None), "generation_config", None)
        if config is None:
            raise ValueError(f"lm_eval.generation_cache: {self.generation_cache!r} needs the hf "
                             f"backend (an HF model with a generation config), not "
                             f"{type(self.lm).__name__}")  # fmt: skip
        before, config.cache_implementation = config.cache_implementation, self.generation_cache
        try:
            yield
        finally:
            config.cache_implementation = before

    def _answer(self, reqtype: str, requests: list) -> list:
        keys = [request_key(self.model_hash, r.task_name or "", r) for r in requests]
        found = self.cache.get_many(
            k for k, r in zip(keys, requests, strict=True) if not _is_sampling(r)
        )
        results: list = [None] * len(requests)
        todo: dict[str, list[int]] = {}  # key -> indices asking for it (dedup)
        units: list[tuple[str | None, list[int]]] = []  # one model request each
        for i, (key, req) in enumerate(zip(keys, requests, strict=True)):
            if _is_sampling(req):
                units.append((None, [i]))
            elif key in found:
                results[i] = _restore(reqtype, found[key])
                self.n_cached += 1
            elif key in todo:
                todo[key].append(i)
            else:
                todo[key] = [i]
                units.append((key, todo[key]))
        n_hit = len(requests) - sum(len(ix) for _, ix in units)
        log.info("%s: %d requests, %d cached, %d to compute", reqtype, len(requests), n_hit,
                 len(units))  # fmt: skip
        units.sort(key=lambda u: -_length_proxy(requests[u[1][0]]))  # stable: ties keep order
        self._compute(reqtype, requests, units, results)
        return results

    def _compute(self, reqtype, requests, units, results) -> None:
        lm = self.lm
        auto = getattr(lm, "batch_size_per_gpu", None) == "auto" and hasattr(
            lm, "_detect_batch_size"
        )
        auto = auto and getattr(lm, "batch_schedule", 1) == 1  # auto:N asks for re-detection
        fn = getattr(lm, reqtype)
        quiet = {"disable_tqdm": True} if "disable_tqdm" in inspect.signature(fn).parameters else {}
        done, restore, estimated, step = 0, None, None, self.chunk_size
        try:
            while done < len(units):
                if done == 0 and reqtype != "loglikelihood":
                    restore, estimated = self._pin_batch(reqtype, requests, units, auto)
                    step = aligned_chunk(self.chunk_size, getattr(lm, "batch_size_per_gpu", None))
                first, chunk = done == 0, units[done : done + step]
                out = self._call(fn, [requests[ix[0]] for _, ix in chunk], quiet, estimated)
                if len(out) != len(chunk):
                    raise RuntimeError(f"{reqtype}: {len(out)} answers for {len(chunk)} requests")
                if auto and first and reqtype == "loglikelihood" and lm.batch_sizes:
                    # detected on the longest requests (sorted first): safe for the shorter rest
                    lm.batch_size_per_gpu = min(lm.batch_sizes.values())
                    self.batch_sizes_used[reqtype] = lm.batch_size_per_gpu
                # JSON round trip: fresh answers look exactly like cached ones
                out = [json.loads(json.dumps(v)) for v in out]
                self.cache.put_many((k, v) for (k, _), v in zip(chunk, out, strict=True) if k)
                for (_, ix), v in zip(chunk, out, strict=True):
                    for i in ix:
                        results[i] = _restore(reqtype, v)
                    self.n_cached += len(ix) - 1
                self.n_computed += len(chunk)
                self.n_chunks += 1
                done += len(chunk)
                log.info("%s: %d/%d computed and cached", reqtype, done, len(units))
                crash_if_due(self.n_chunks, self.crash_after_chunks)
        finally:
            if auto:
                lm.batch_size_per_gpu = "auto"
            elif restore is not None:
                lm.batch_size_per_gpu = restore

    def _pin_batch(self, reqtype, requests, units, auto: bool):
        """Fix the batch size of a generate/rolling call before its first chunk: the configured
        generation batch, else (auto) the KV-cache estimate or lm-eval's detection, which runs
        at the model's max length on every call anyway. Returns (the value to restore, the
        estimate or None)."""
        lm, fixed = self.lm, self.generation_batch_size if reqtype == "generate_until" else None
        if _positive_int(fixed) and hasattr(lm, "batch_size_per_gpu"):
            restore, lm.batch_size_per_gpu = lm.batch_size_per_gpu, fixed
            self.batch_sizes_used[reqtype] = fixed
            return restore, None
        if not auto:
            return None, None
        estimated = None
        if fixed == "auto":
            estimated = hflm_generation_batch(lm, [requests[ix[0]] for _, ix in units])
        lm.batch_size_per_gpu = estimated or lm._detect_batch_size()
        self.batch_sizes_used[reqtype] = lm.batch_size_per_gpu
        if estimated:
            self.batch_sizes_used[f"{reqtype}_from"] = "kv_cache_estimate"
        return None, estimated

    def _call(self, fn, reqs: list, quiet: dict, estimated: int | None) -> list:
        """fn(reqs); a batch size estimated from the KV cache that runs out of GPU memory
        is halved and the chunk retried (lm-eval's detection does the same by trial)."""
        while True:
            try:
                return fn(reqs, **quiet)
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
                if not estimated or "out of memory" not in str(e).lower():
                    raise
                if self.lm.batch_size_per_gpu <= 1:
                    raise
                import torch

                torch.cuda.empty_cache()
                self.lm.batch_size_per_gpu = max(1, self.lm.batch_size_per_gpu // 2)
                self.batch_sizes_used["generate_until"] = self.lm.batch_size_per_gpu
                log.warning("generate_until: out of GPU memory at the estimated batch size; "
                            "retrying at %d", self.lm.batch_size_per_gpu)  # fmt: skip
