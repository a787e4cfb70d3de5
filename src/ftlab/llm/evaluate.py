"""Resumable evaluation of LLM checkpoints: lm-eval benchmarks and in-domain generation.

- ``run_lm_eval``: one model load for all lm-eval benchmarks (registry names or local YAMLs),
  0-shot; every model request goes through ``CachedLM``, which answers what ``SampleCache``
  already holds and commits new answers chunk by chunk. A job killed by a time limit loses at
  most one chunk; the re-run recomputes nothing else and gives the same metrics.
- ``evaluate_in_domain``: greedy batched generation on the fine-tuning task's test rows, each
  completion scored with ``ftlab.llm.rewards.score_completion``, cached the same way.

Both write the per-sample file first and the metrics file last (atomically), so an existing
metrics file implies a complete samples file.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from ftlab.io import atomic_write_json, atomic_write_lines, checkpoint_sha256
from ftlab.llm.cache import SampleCache, request_key
from ftlab.llm.data import prompt_for
from ftlab.llm.rewards import score_completion

log = logging.getLogger("ftlab.llm.evaluate")

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
# Test hook: exit abruptly (no cleanup, like SIGKILL) after this many committed chunks.
CRASH_ENV = "FTLAB_EVAL_CRASH_AFTER_CHUNKS"
CRASH_EXIT_CODE = 75
DEFAULT_CHUNK = 512  # requests per model call; the most a kill can lose


def model_fingerprint(model: str) -> str:
    """Identity of the model whose answers a cache row holds.

    A local directory: ``checkpoint_sha256`` (weights, config, tokenizer; run metadata
    excluded), so a copied or re-published checkpoint keeps its cached answers. A hub id:
    sha256 of ``id@commit`` where the commit is the one the offline HF cache resolves ``main``
    to. Limitation: without a local snapshot the commit is unknown and only the id is hashed,
    so a hub model updated under the same id would wrongly reuse old answers; pin local dirs.
    """
    path = Path(model)
    if path.is_dir():
        return checkpoint_sha256(path)
    commit = _hub_commit(model)
    return hashlib.sha256(f"hub:{model}@{commit or ''}".encode()).hexdigest()


def _model_identity(model: str, model_hash: str, meta: dict) -> dict:
    """The leading fields of a result file: which model (and step) it describes."""
    return {
        "model": meta.get("model", model),  # the study's name for it when given
        "model_path": model,
        "model_sha256": model_hash,
        "step": meta.get("step"),
    }


def _hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not cached, offline, not a repo id: fall back to the id alone
        return None


def _is_sampling(request) -> bool:
    """Sampled generations are not cached (repeats must differ), as in lm-eval's CachingLM."""
    args = request.args
    return (
        request.request_type == "generate_until"
        and len(args) > 1
        and isinstance(args[1], dict)
        and bool(args[1].get("do_sample", False))
    )


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
    cost several full-size forward passes each time.
    """

    def __init__(
        self,
        lm: LM,
        cache: SampleCache,
        model_hash: str,
        chunk_size: int = DEFAULT_CHUNK,
        crash_after_chunks: int | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.cache = cache
        self.model_hash = model_hash
        self.chunk_size = max(1, int(chunk_size))
        env = os.environ.get(CRASH_ENV)
        self.crash_after_chunks = crash_after_chunks or (int(env) if env else None)
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
        return self.lm.rank

    @property
    def world_size(self) -> int:
        return self.lm.world_size

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
        return self._answer("generate_until", requests)

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
        done = 0
        try:
            for start in range(0, len(units), self.chunk_size):
                chunk = units[start : start + self.chunk_size]
                if auto and start == 0 and reqtype != "loglikelihood":
                    # generate/rolling detect at the model's max length on every call anyway
                    lm.batch_size_per_gpu = lm._detect_batch_size()
                    self.batch_sizes_used[reqtype] = lm.batch_size_per_gpu
                out = fn([requests[ix[0]] for _, ix in chunk], **quiet)
                if len(out) != len(chunk):
                    raise RuntimeError(f"{reqtype}: {len(out)} answers for {len(chunk)} requests")
                if auto and start == 0 and reqtype == "loglikelihood" and lm.batch_sizes:
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
                if self.crash_after_chunks and self.n_chunks >= self.crash_after_chunks:
                    os._exit(CRASH_EXIT_CODE)
        finally:
            if auto:
                lm.batch_size_per_gpu = "auto"


# ---------------------------------------------------------------------------- lm-eval runs


def portable_tasks(include_path: str, dest: str | Path) -> str:
    """Copy of a folder of local task YAMLs whose relative `data_files` point at files beside
    the YAML. lm-eval hands data_files to datasets.load_dataset unchanged, which resolves them
    against the working directory, so a task folder would otherwise only work from one cwd."""
    import yaml

    src, dest = Path(include_path).resolve(), Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"lm-eval include_path {include_path!r} is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.rglob("*.yaml"):
        text = path.read_text()
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError:  # e.g. !function tags: leave such files as they are
            cfg = None
        files = (
            (cfg or {}).get("dataset_kwargs", {}).get("data_files")
            if isinstance(cfg, dict)
            else None
        )
        if isinstance(files, dict):
            cfg["dataset_kwargs"]["data_files"] = {
                k: str(path.parent / v) if not Path(v).is_absolute() else v
                for k, v in files.items()
            }
            cfg["dataset_kwargs"].setdefault("cache_dir", str(dest / ".datasets_cache"))
            text = yaml.safe_dump(cfg, sort_keys=False)
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return str(dest)


def _task_manager(names: list[str], include_path: str | None):
    """Local-only index when every name is local (scanning lm-eval's ~15k YAMLs takes ~10 s)."""
    from lm_eval.tasks import TaskManager

    if include_path:
        tm = TaskManager(include_path=include_path, include_defaults=False)
        if all(n in tm.all_tasks for n in names):
            return tm
    return TaskManager(include_path=include_path)


def _unknown(kind: str, name: str, known: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return ValueError(f"unknown {kind} {name!r} {where}{hint}")


def _metrics_of(obj) -> list[str]:
    if hasattr(obj, "aggregate_metric_list"):  # a Group: only its aggregated metrics exist
        return [a.metric for a in obj.aggregate_metric_list or []]
    return list(obj.aggregation())


def _load_benchmarks(tm, benchmarks: dict[str, str]) -> dict[str, Any]:
    """{name: Task | Group}, after checking every task and metric name (before the model load)."""
    objs = {}
    for name, metric in benchmarks.items():
        if name not in tm.all_tasks:
            raise _unknown("lm-eval task", name, tm.all_tasks, "(benchmark)")
        if name in tm.all_tags:
            raise ValueError(f"benchmark {name!r} is a tag (several tasks); name a task or group")
        loaded = tm.load([name])
        obj = loaded["groups"].get(name) or loaded["tasks"][name]
        metrics = _metrics_of(obj)
        if metric.split(",")[0] not in metrics:
            raise _unknown("metric", metric, metrics, f"for benchmark {name!r} (has {metrics})")
        objs[name] = obj
    return objs


def _make_lm(model: str, backend: str, batch_size, device: str, model_args: dict | None):
    kwargs = dict(model_args or {})
    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=model, batch_size=batch_size, device=device, **kwargs)
    if backend == "vllm":
        try:  # imported lazily: vllm exists on GPU machines only
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError as e:
            raise RuntimeError("backend 'vllm' needs the vllm package (GPU machines)") from e
        return VLLM(pretrained=model, batch_size=batch_size, device=device, **kwargs)
    raise ValueError(f"unknown backend {backend!r} (hf or vllm)")


def _num(x):
    return float(x) if isinstance(x, int | float) else None


def _metric_row(res: dict, name: str, metric: str, obj) -> dict:
    values = res["results"].get(name, {})
    if "," in metric:
        key = metric
    else:
        cands = sorted(k for k in values if k.split(",")[0] == metric)
        if len(cands) > 1 and f"{metric},none" not in cands:
            raise ValueError(f"{name}: metric {metric!r} has several filters {cands}; pick one")
        key = f"{metric},none" if len(cands) != 1 else cands[0]
    if key not in values:
        have = sorted(k for k in values if "," in k and "_stderr," not in k)
        raise ValueError(f"{name}: no result {metric!r}; results have {have}")
    m, filt = key.split(",", 1)
    tasks = obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]
    n = sum(res["n-samples"][t.task_name]["effective"] for t in tasks)
    stderr = _num(values.get(f"{m}_stderr,{filt}"))
    return {"task": name, "metric": key if "," in metric else metric, "value": float(values[key]),
            "stderr": stderr, "n": int(n)}  # fmt: skip


def _sample_lines(res: dict, objs: dict) -> list[str]:
    from lm_eval.utils import handle_non_serializable

    owner = {}
    for name, obj in objs.items():
        for t in obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]:
            owner.setdefault(t.task_name, name)
    lines = []
    for task in sorted(res.get("samples", {})):
        for s in sorted(res["samples"][task], key=lambda s: (s["doc_id"], s["filter"])):
            resp = s["filtered_resps"]
            row = {
                "benchmark": owner.get(task, task),
                "task": task,
                "doc_id": s["doc_id"],
                "filter": s["filter"],
                "prompt": s["arguments"][0][0] if s["arguments"] else None,
                "target": s["target"],
                "response": resp[0] if len(resp) == 1 else resp,
                "metrics": {m: s[m] for m in s["metrics"]},
            }
            lines.append(json.dumps(row, default=handle_non_serializable, ensure_ascii=False))
    return lines


def run_lm_eval(
    *,
    model: str,
    benchmarks: dict[str, str],
    out_json: str,
    samples_path: str,
    cache_path: str,
    batch_size: int | str = "auto",
    limit: int | None = None,
    include_path: str | None = None,
    num_fewshot: int = 0,
    device: str | None = None,
    backend: str = "hf",
    meta: dict | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    bootstrap_iters: int = 100000,
    model_args: dict | None = None,
) -> dict:
    """Score `model` on lm-eval `benchmarks` ({task or group: metric}) with one model load.

    `metric` is a metric name ("acc_norm"; the "none" filter is taken when there are several)
    or "metric,filter". Unknown tasks or metrics fail before the model is loaded. Answers are
    cached per request in `cache_path`; `n_cached`/`n_computed` in the result say how many
    came from there. Writes `samples_path` (jsonl, one line per doc and filter) and then
    `out_json`; returns the `out_json` object. `bootstrap_iters` only matters for metrics
    without a closed-form stderr (means, i.e. all accuracies, have one). `device` None:
    "cuda" when a GPU is visible, else "cpu".
    """
    import lm_eval.evaluator

    t0 = time.perf_counter()
    if not benchmarks:
        raise ValueError("no benchmarks given")
    tmp = tempfile.TemporaryDirectory()
    if include_path:
        include_path = portable_tasks(include_path, tmp.name)
    tm = _task_manager(list(benchmarks), include_path)
    objs = _load_benchmarks(tm, benchmarks)
    model_hash = model_fingerprint(model)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = _make_lm(model, backend, batch_size, device, model_args)
    # The backend is part of the cache identity: hf and vllm logprobs differ in the last bits.
    cache_id = model_hash if backend == "hf" else f"{model_hash}-{backend}"
    with SampleCache(cache_path) as cache:
        clm = CachedLM(lm, cache, cache_id, chunk_size=chunk_size)
        res = lm_eval.evaluator.simple_evaluate(
            model=clm,
            tasks=[objs[n] for n in benchmarks],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=tm,
            log_samples=True,
            bootstrap_iters=bootstrap_iters,
        )
    rows = [_metric_row(res, n, m, objs[n]) for n, m in benchmarks.items()]
    meta = dict(meta or {})
    out = {
        **_model_identity(model, model_hash, meta),
        "benchmarks": rows,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "n_cached": clm.n_cached,
        "n_computed": clm.n_computed,
        "lm_eval_version": version("lm_eval"),
        "backend": backend,
        "batch_size": batch_size,
        "batch_sizes_used": clm.batch_sizes_used,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "meta": meta,
    }
    atomic_write_lines(samples_path, _sample_lines(res, objs))
    atomic_write_json(out_json, out)  # last: its existence implies the samples file
    return out


# ---------------------------------------------------------------------------- in-domain


class HFGenerator:
    """Greedy batched generation with an HF causal LM: left padding, KV cache, stop at eos."""

    def __init__(self, model: str, device: str | None = None, chat_template: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tok = AutoTokenizer.from_pretrained(model)
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device)
        self.model.eval()
        self.chat_template = chat_template

    def __call__(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch
        from transformers import GenerationConfig

        if self.chat_template:
            prompts = [
                self.tok.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        enc = self.tok(
            prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat_template
        ).to(self.device)
        eos = self.model.generation_config.eos_token_id or self.tok.eos_token_id
        # A fresh config: the checkpoint's may ask for sampling (temperature, top_p).
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
            pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
        )  # fmt: skip
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=cfg)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def _read_rows(path: str, limit: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:limit] if limit is not None else rows


def evaluate_in_domain(
    *,
    model: str,
    rows_path: str,
    fmt: str,
    out_json: str,
    samples_path: str,
    cache_path: str,
    prompt_style: str = "reasoning",
    max_new_tokens: int = 256,
    batch_size: int = 16,
    limit: int | None = None,
    meta: dict | None = None,
    device: str | None = None,
    chat_template: bool = False,
    generate_fn: Callable[[list[str], int], list[str]] | None = None,
) -> dict:
    """Greedy accuracy of `model` on the normalized rows of `rows_path` (jsonl).

    Prompts are ``ftlab.llm.data.prompt_for(row, prompt_style)``; completions are scored with
    ``ftlab.llm.rewards.score_completion(text, row, fmt)`` (correct, partial, format), whose
    means are the result. Completions are cached per prompt (key: model fingerprint,
    "in_domain:<fmt>", prompt + generation settings) one committed batch at a time, so a
    resumed run generates only what is missing; scores are recomputed from the completions.
    `generate_fn(prompts, max_new_tokens)` replaces the HF model (tests, other backends).
    """
    t0 = time.perf_counter()
    rows = _read_rows(rows_path, limit)
    prompts = [prompt_for(r, prompt_style) for r in rows]
    model_hash = model_fingerprint(model)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "chat": chat_template}
    task = f"in_domain:{fmt}"
    keys = [request_key(model_hash, task, ("generate", [p, settings])) for p in prompts]
    env = os.environ.get(CRASH_ENV)
    n_computed = 0
    with SampleCache(cache_path) as cache:
        done = cache.get_many(keys)
        todo = sorted({k: p for k, p in zip(keys, prompts, strict=True) if k not in done}.items(),
                      key=lambda kp: -len(kp[1]))  # fmt: skip
        if todo and generate_fn is None:
            generate_fn = HFGenerator(model, device, chat_template)
        for n_batch, start in enumerate(range(0, len(todo), batch_size), 1):
            batch = todo[start : start + batch_size]
            outs = generate_fn([p for _, p in batch], max_new_tokens)
            cache.put_many(zip([k for k, _ in batch], outs, strict=True))
            done.update(zip([k for k, _ in batch], outs, strict=True))
            n_computed += len(batch)
            log.info("in_domain %s: %d/%d generated", fmt, n_computed, len(todo))
            if env and n_batch >= int(env):
                os._exit(CRASH_EXIT_CODE)
    n_cached = len(keys) - n_computed  # duplicate prompts count as cached: generated once
    samples, sums = [], {"correct": 0.0, "partial": 0.0, "format": 0.0}
    for row, prompt, key in zip(rows, prompts, keys, strict=True):
        completion = done[key]
        s = score_completion(completion, row, fmt)
        for k in sums:
            sums[k] += float(s[k])
        samples.append({"id": row.get("id"), "prompt": prompt, "completion": completion,
                        "answer": row.get("answer"), **{k: float(s[k]) for k in sums}})  # fmt: skip
    n = len(rows)
    meta = dict(meta or {})
    out = {
        **_model_identity(model, model_hash, meta),
        "fmt": fmt,
        "prompt_style": prompt_style,
        "accuracy": sums["correct"] / n if n else None,
        "partial_accuracy": sums["partial"] / n if n else None,
        "format_accuracy": sums["format"] / n if n else None,
        "n": n,
        "n_cached": n_cached,
        "n_computed": n_computed,
        "max_new_tokens": max_new_tokens,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "meta": meta,
    }
    atomic_write_lines(samples_path, (json.dumps(s, ensure_ascii=False) for s in samples))
    atomic_write_json(out_json, out)
    return out
