"""lm-eval benchmarks of one model with one model load, every request through the sample cache.

``run_lm_eval`` checks task and metric names before the model is loaded, then runs lm-eval's
``simple_evaluate`` 0-shot on a ``CachedLM``: a job killed by a time limit loses at most one
chunk of requests, and the re-run recomputes nothing else and gives the same metrics. The
per-sample file is written first and the metrics file last (atomically), so an existing
metrics file implies a complete samples file.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ftlab.io import atomic_write_json, sha256_json, write_jsonl
from ftlab.llm.cache import DEFAULT_CHUNK, CachedLM, Ranks, open_cache
from ftlab.llm.fingerprint import model_fingerprint, model_identity
from ftlab.llm.generate import default_device


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
    for path in src.rglob("*.py"):  # helpers of `!function utils.x` must sit beside the YAML
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
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


def _load_benchmarks(tm, benchmarks: dict[str, str], docs: dict[str, int]) -> dict[str, Any]:
    """{name: Task | Group}, after checking every task and metric name (before the model load);
    fills `docs` with {task: evaluation documents}."""
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
        # documents of every task the benchmark runs (a group's subtasks), for the rank check
        docs.update({t: len(task.eval_docs) for t, task in loaded["tasks"].items()})
    return objs


PARALLEL = ("data", "model")


def check_documents_per_rank(docs: dict[str, int], world_size: int, limit) -> None:
    """lm-eval gives rank r documents r, r + N, ...; a rank left without any document of a task
    fails inside lm-eval after the model load, so refuse it before, naming the task."""
    if world_size == 1:
        return
    if isinstance(limit, int) and limit < world_size:
        raise ValueError(
            f"config key 'lm_eval.limit' ({limit}) is below the evaluation's {world_size} "
            "processes (resources.evaluate.gpus): every rank needs a document of each task"
        )
    few = {t: n for t, n in docs.items() if n < world_size}
    if few:
        raise ValueError(
            f"lm-eval task(s) {few} have fewer documents than the evaluation's {world_size} "
            "processes (resources.evaluate.gpus): every rank needs a document of each task; "
            "evaluate with fewer processes"
        )


def placement_args(backend: str, parallel: str, gpus: int, model_args: dict | None) -> dict:
    """lm-eval model arguments that place one model over the job's GPUs (not part of the cache
    key: where the layers sit does not change the answers' dtype or arithmetic).

    vllm: `tensor_parallel_size` = the job's GPUs (vLLM shards the model itself; one process),
    unless model_args sets it. hf with `parallel: model` and several GPUs: `parallelize=True`,
    lm-eval's `device_map="auto"` split of one model over every visible GPU (a model too large
    for one GPU). hf with `parallel: data`: nothing, the launcher's processes split the
    documents instead."""
    if parallel not in PARALLEL:
        raise ValueError(f"config key 'lm_eval.parallel': {parallel!r} is not one of {PARALLEL}")
    given = model_args or {}
    if backend == "vllm" and gpus > 1 and "tensor_parallel_size" not in given:
        return {"tensor_parallel_size": int(gpus)}
    if backend == "hf" and parallel == "model" and gpus > 1 and "parallelize" not in given:
        return {"parallelize": True}
    return {}


def _make_lm(model: str, backend: str, batch_size, device: str, model_args: dict | None,
             ranks: Ranks | None = None):  # fmt: skip
    kwargs = dict(model_args or {})
    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, batch_size=batch_size, device=device, **kwargs)
        if ranks is not None and ranks.world_size > 1:
            # Under a launcher HFLM placed the model on this rank's device (its Accelerator);
            # the sharding and gathers are CachedLM's, so HFLM itself stays single-process.
            lm._rank, lm._world_size = 0, 1
        return lm
    if backend == "vllm":
        try:  # imported lazily: vllm exists on GPU machines only
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError as e:
            raise RuntimeError("backend 'vllm' needs the vllm package (GPU machines)") from e
        return VLLM(pretrained=model, batch_size=batch_size, device=device, **kwargs)
    raise ValueError(f"unknown backend {backend!r} (hf or vllm)")


def cache_identity(model_hash: str, backend: str, model_args: dict, device: str = "cpu",
                   batch_size: int | str = "auto",
                   generation_batch_size: int | str = "auto",
                   generation_cache: str = "dynamic") -> str:  # fmt: skip
    """The model part of every cache key: the checkpoint's content hash, plus the backend,
    model arguments (dtype among them), device type ("cuda", "cpu"; not the index) and the
    configured batch size - hf and vllm, bf16 and fp32, GPU and CPU kernels and differently
    padded batches give logprobs that differ in the last bits, which can flip an argmax.
    ("auto" is one batch size: lm-eval's search may pick other sizes on other GPUs.) A
    generation batch size other than "auto" is part of it too (left out at "auto", so keys
    made before the option existed stay valid), and so is a generation cache other than
    "dynamic" (a static cache is compiled on CUDA: other kernels)."""
    ident = {"backend": backend, "model_args": model_args,
             "device": str(device).split(":")[0], "batch_size": str(batch_size)}  # fmt: skip
    if str(generation_batch_size) != "auto":
        ident["generation_batch_size"] = str(generation_batch_size)
    if generation_cache != "dynamic":
        ident["generation_cache"] = generation_cache
    return f"{model_hash}-{sha256_json(ident)[:16]}"


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


def _sample_rows(res: dict, objs: dict) -> list[dict]:
    owner = {}
    for name, obj in objs.items():
        for t in obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]:
            owner.setdefault(t.task_name, name)
    rows = []
    for task in sorted(res.get("samples", {})):
        for s in sorted(res["samples"][task], key=lambda s: (s["doc_id"], s["filter"])):
            resp = s["filtered_resps"]
            rows.append({
                "benchmark": owner.get(task, task),
                "task": task,
                "doc_id": s["doc_id"],
                "filter": s["filter"],
                "prompt": s["arguments"][0][0] if s["arguments"] else None,
                "target": s["target"],
                "response": resp[0] if len(resp) == 1 else resp,
                "metrics": {m: s[m] for m in s["metrics"]},
            })  # fmt: skip
    return rows


LM_EVAL_OPTIONS = (
    "batch_size",
    "limit",
    "include_path",
    "num_fewshot",
    "backend",
    "dtype",
    "model_args",
    "parallel",
    "generation_batch_size",
    "generation_cache",
)


def lm_eval_options(section: dict) -> dict:
    """run_lm_eval keyword arguments from a study's `lm_eval` config section (keys it lacks
    keep run_lm_eval's defaults)."""
    return {k: section[k] for k in LM_EVAL_OPTIONS if k in section}


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
    dtype: str = "auto",
    parallel: str = "data",
    gpus: int = 0,
    generation_batch_size: int | str = "auto",
    generation_cache: str = "dynamic",
) -> dict | None:
    """Score `model` on lm-eval `benchmarks` ({task or group: metric}) with one model load.

    `metric` is a metric name ("acc_norm"; the "none" filter is taken when there are several)
    or "metric,filter". Unknown tasks or metrics fail before the model is loaded. Answers are
    cached per request in `cache_path`; `n_cached`/`n_computed` in the result say how many
    came from there. Writes `samples_path` (jsonl, one line per doc and filter) and then
    `out_json`; returns the `out_json` object. `bootstrap_iters` only matters for metrics
    without a closed-form stderr (means, i.e. all accuracies, have one). `device` None:
    "cuda" when a GPU is visible, else "cpu". `dtype` ("auto": the checkpoint's own) and
    `model_args` go to the lm-eval model and, with the backend, into every cache key: answers
    computed in another precision or with other arguments are never reused.

    Several processes (started by ftlab.launch, WORLD_SIZE > 1): lm-eval's data-parallel mode;
    each rank scores its share of the documents, caches its answers in a rank file of
    `cache_path` (merged by rank 0; see ftlab.llm.cache), and rank 0 gathers the samples and
    writes the results; other ranks return None. `parallel` ("data" | "model") and `gpus` (the
    job's GPUs) place one model over several GPUs instead (``placement_args``).
    `generation_batch_size`: the generate_until batch ("auto": estimated from the KV cache on
    a GPU; "detect": lm-eval's detection; an integer) and `generation_cache` ("dynamic",
    lm-eval's; "static": a preallocated KV cache, compiled on CUDA; hf backend only), see
    ftlab.llm.cache.CachedLM.
    """
    import lm_eval.evaluator
    from lm_eval.utils import handle_non_serializable

    t0 = time.perf_counter()
    if not benchmarks:
        raise ValueError("no benchmarks given")
    if generation_cache != "dynamic" and backend != "hf":
        raise ValueError(f"lm_eval.generation_cache: {generation_cache!r} needs backend 'hf', "
                         f"not {backend!r} (vllm manages its own KV cache)")  # fmt: skip
    tmp = tempfile.TemporaryDirectory()
    if include_path:
        include_path = portable_tasks(include_path, tmp.name)
    tm = _task_manager(list(benchmarks), include_path)
    docs: dict[str, int] = {}
    objs = _load_benchmarks(tm, benchmarks, docs)
    model_hash = model_fingerprint(model)
    args = {**(model_args or {}), **({"dtype": dtype} if dtype != "auto" else {})}
    placement = placement_args(backend, parallel, gpus, model_args)
    ranks = Ranks()
    check_documents_per_rank(docs, ranks.world_size, limit)
    device = device or default_device()
    lm = _make_lm(model, backend, batch_size, device, {**args, **placement}, ranks)
    cache_id = cache_identity(model_hash, backend, args, device, batch_size,
                              generation_batch_size, generation_cache)  # fmt: skip
    with open_cache(cache_path, ranks) as cache:
        clm = CachedLM(lm, cache, cache_id, chunk_size=chunk_size, ranks=ranks,
                       generation_batch_size=generation_batch_size,
                       generation_cache=generation_cache)  # fmt: skip
        res = lm_eval.evaluator.simple_evaluate(
            model=clm,
            tasks=[objs[n] for n in benchmarks],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=tm,
            log_samples=True,
            bootstrap_iters=bootstrap_iters,
        )
    n_cached, n_computed = ranks.sum(clm.n_cached), ranks.sum(clm.n_computed)
    if not ranks.main:  # rank 0 has every rank's samples and metrics
        return None
    rows = [_metric_row(res, n, m, objs[n]) for n, m in benchmarks.items()]
    meta = dict(meta or {})
    out = {
        **model_identity(model, model_hash, meta),
        "benchmarks": rows,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "n_cached": n_cached,
        "n_computed": n_computed,
        "lm_eval_version": version("lm_eval"),
        "backend": backend,
        "dtype": dtype,
        "model_args": model_args or {},
        "cache_identity": cache_id,
        "processes": ranks.world_size,
        "placement": placement,
        "batch_size": batch_size,
        "generation_batch_size": generation_batch_size,
        "generation_cache": generation_cache,
        "batch_sizes_used": clm.batch_sizes_used,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "meta": meta,
    }
    write_jsonl(samples_path, _sample_rows(res, objs), default=handle_non_serializable)
    atomic_write_json(out_json, out)  # last: its existence implies the samples file
    return out
