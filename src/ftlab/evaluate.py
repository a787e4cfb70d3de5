"""Greedy evaluation of one checkpoint on many eval sets (one model load).

It writes one samples file (one object per row of every set, with its eval_set) and then one
metrics file (a results row per eval set and task), both atomically and the metrics last, so an
existing metrics file implies its samples file.

Device: `device` auto | cpu | cuda (ftlab.device). Weights (`eval.precision`): auto = the paper's
(src/eval/evaluate_checkpoints.py loads float16 on CUDA, float32 on the CPU); fp32 = float32 on
every device (greedy answers comparable across devices). `batch_size="auto"` sizes batches from
the GPU's free memory (64 on the CPU).

Answers (`eval.answer_parsing`, ftlab.world.tasks.Task.parse): paper = the paper's metric
classes applied to prompt + continuation; strict = the whole continuation must be the answer.
New tokens (`eval.max_new_tokens`): paper = each task's budget in the paper's src/evaluation.py
(20; trianglearea, angle and perimeter 30), decoded once with the set's largest budget and each
row cut to its own (greedy tokens do not depend on the budget); answer = the set's longest
answer + 2 (an ftlab option; faster while a model still rambles). Either is capped by the
model's positions. Continuations are decoded without special tokens, as the paper's
batch_decode(skip_special_tokens=True).

Decoding (`eval.decode`, ftlab.decode): `loop` (the KV-cache loop), `static` (a static KV
cache whose per-token step is captured as one CUDA graph on a CUDA device when `cuda_graphs`
is on) or `generate` (HF generate, the reference); `auto` = static on CUDA with cuda_graphs,
else loop (on the CPU the static cache measured no faster: benchmarks/gpu_world.py
--decode-only). All give the same tokens. A capture serves every batch and every eval set
of a checkpoint with the same batch size and cache length (longest prompt + new tokens,
rounded up to 16): a batch's prompt width and its number of new tokens are device tensors
and loop bounds, not shapes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ftlab.batches import read_rows
from ftlab.checkpointing import META_FILE
from ftlab.decode import StaticDecoder, decode_generate, decode_loop, static_max_len
from ftlab.device import auto_eval_batch_size, resolve_device
from ftlab.io import atomic_write_json, atomic_write_lines, checkpoint_sha256, read_json
from ftlab.paths import EVAL_SET_SEP
from ftlab.study import MULTITASK, TASKS
from ftlab.tokenizer import load_tokenizer

log = logging.getLogger("ftlab.evaluate")


def device(name: str = "auto") -> torch.device:
    return resolve_device(name)


EVAL_PRECISIONS = ("auto", "fp32", "fp16")
ANSWER_BUDGETS = ("paper", "answer")  # eval.max_new_tokens


def eval_dtype(precision: str, dev: torch.device) -> torch.dtype:
    """The weights' dtype for `eval.precision`: auto = the paper's (float16 on CUDA, float32 on
    the CPU), fp32, or fp16 (CUDA only)."""
    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"eval.precision: unknown {precision!r}; known: {EVAL_PRECISIONS}")
    if precision == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(f"eval.precision: fp16 needs a CUDA device, not {dev.type}")
    return torch.float16 if precision == "fp16" else torch.float32


def load_checkpoint(
    path: str | Path, threads: int = 1, device: str = "auto", precision: str = "fp32"
):
    """(model, tokenizer) of an HF checkpoint dir on `device`: eval mode, left padding, weights
    in `precision` (eval_dtype; fp32 by default, as the representation probes use)."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    dtype = eval_dtype(precision, dev)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev).eval()
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    return model, tokenizer


DECODE_METHODS = ("loop", "static", "generate")
# Static decoders (KV buffers + graph) a checkpoint's evaluation keeps: eval sets come in
# task order, so neighbours share one; more would hold GPU memory that auto batch sizing
# (ftlab.device) does not count.
MAX_KEPT_DECODERS = 1


def decode_method(name: str, dev: torch.device, graphs: bool = True) -> str:
    """The decoder `eval.decode` names; auto = static where its step is captured (CUDA with
    cuda_graphs: the graph is the gain on a launch-bound GPU), else the KV-cache loop (on the
    CPU the static cache measured no faster)."""
    if name == "auto":
        return "static" if dev.type == "cuda" and graphs else "loop"
    if name not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {name!r}: use auto or one of {DECODE_METHODS}")
    return name


def greedy_decode(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    method: str = "loop",
    *,
    graphs: bool = False,
    encoded: list[list[int]] | None = None,
    decoders: dict | None = None,
    budgets: list[int] | None = None,
) -> list[str]:
    """Greedy continuation of every prompt, up to (excluding) <eos>, in the prompts' order.

    Prompts are tokenized with <bos>, sorted by length (so batches carry little padding),
    decoded in left-padded batches with the KV cache; method "loop" (default), "static" (a
    static KV cache, ftlab.decode.StaticDecoder; graphs=True captures its per-token step as a
    CUDA graph on a CUDA device) or "generate" (HF generate with do_sample=False). All three
    give the same tokens (tests/test_decode.py). encoded: the prompts' token ids when the
    caller has them (tokenizing is the largest host cost of a GPU evaluation); decoders: a
    dict that keeps static decoders (and their captures) for later calls on the same model.
    budgets: per prompt, at most this many new tokens are kept (each <= max_new_tokens).
    Special tokens are dropped from the text, as the paper's skip_special_tokens=True.
    """
    if not prompts:
        return []
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    enc = encoded if encoded is not None else tokenizer(list(prompts))["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    if method == "static":
        graph = bool(graphs) and model.device.type == "cuda"
        max_len = static_max_len(max(len(e) for e in enc), max_new_tokens)
        kept = decoders if decoders is not None else {}

        def decode(model, seqs, pad_id, eos_id, max_new_tokens):
            # One captured decoder serves every batch (a short last batch is filled up to its
            # shape); eagerly, a short batch gets its own decoder rather than wasted rows.
            rows = min(batch_size, len(enc)) if graph else len(seqs)
            key = (id(model), rows, max_len, graph)
            if key not in kept:
                while len(kept) >= MAX_KEPT_DECODERS:  # bound the memory of kept KV caches
                    kept.pop(next(iter(kept)))
                kept[key] = StaticDecoder(model, rows, max_len, eos_id, graph=graph)
            return kept[key].decode(seqs, pad_id, max_new_tokens)
    else:
        decode = {"loop": decode_loop, "generate": decode_generate}[method]
    outputs: list[str | None] = [None] * len(enc)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        gen = decode(model, [enc[i] for i in chunk], pad_id, eos_id, max_new_tokens).tolist()
        if budgets is not None:
            gen = [g[: budgets[i]] for i, g in zip(chunk, gen, strict=True)]
        cut = [g[: g.index(eos_id)] if eos_id in g else g for g in gen]
        texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
        for i, text in zip(chunk, texts, strict=True):
            outputs[i] = text
    return outputs  # type: ignore[return-value]


def _task_order(name: str) -> tuple[int, str]:
    return (TASKS.index(name) if name in TASKS else len(TASKS), name)


def resolve_batch_size(batch_size: int | str, model, n_rows: int, seq_len: int) -> int:
    """An integer batch size as given; "auto": from the device's free memory (ftlab.device)."""
    if batch_size == "auto":
        return auto_eval_batch_size(model, model.device, n_rows, seq_len)
    return int(batch_size)


def evaluate_set(
    model, tokenizer, name: str, rows: list[str], batch_size: int | str, *,
    decode: str = "auto", cuda_graphs: bool = True, decoders: dict | None = None,
    answer_parsing: str = "paper", max_new_tokens: str = "paper",
) -> tuple[list[dict], dict]:  # fmt: skip
    """Decode and score one eval set: (per-sample records, partial metrics dict).

    decode: auto | loop | static | generate (decode_method); cuda_graphs: capture the static
    decoder's step on a CUDA device; decoders: kept static decoders (greedy_decode);
    answer_parsing: paper | strict (Task.parse); max_new_tokens: paper (each task's budget)
    | answer (the longest answer + 2)."""
    from ftlab.world.tasks import split_prompt, task_of_row

    variant = name.split(EVAL_SET_SEP, 1)[1] if EVAL_SET_SEP in name else ""
    if max_new_tokens not in ANSWER_BUDGETS:
        raise ValueError(
            f"eval.max_new_tokens: unknown {max_new_tokens!r}; known: {ANSWER_BUDGETS}"
        )
    pairs = [split_prompt(r) for r in rows]
    prompts = [p for p, _ in pairs]
    tasks = [task_of_row(r) for r in rows]
    t0 = time.perf_counter()
    outputs: list[str] = []
    if rows:
        enc = tokenizer(prompts)["input_ids"]
        longest_prompt = max(len(ids) for ids in enc)
        room = model.config.max_position_embeddings - longest_prompt
        if max_new_tokens == "paper":
            budgets = [max(1, min(t.max_new_tokens, room)) for t in tasks]
            max_new = max(budgets)
        else:
            max_new = max(1, min(max(len(a) for _, a in pairs) + 2, room))
            budgets = None
        batch_size = resolve_batch_size(batch_size, model, len(rows), longest_prompt + max_new)
        method = decode_method(decode, model.device, cuda_graphs)
        outputs = greedy_decode(
            model, tokenizer, prompts, batch_size, max_new, method, graphs=cuda_graphs,
            encoded=enc, decoders=decoders, budgets=budgets,
        )  # fmt: skip
    samples, per_task = [], {}
    for task, (prompt, target), output in zip(tasks, pairs, outputs, strict=True):
        score = float(task.score(output, prompt + target, answer_parsing))
        parsed = task.parse(output, prompt, answer_parsing) is not None
        samples.append(
            {
                "prompt": prompt,
                "target": target,
                "output": output,
                "task": task.name,
                "score": score,
                "parsed": parsed,
            }
        )
        entry = per_task.setdefault(task.name, {"metric": task.metric, "scores": [], "bad": 0})
        entry["scores"].append(score)
        entry["bad"] += not parsed
    elapsed = time.perf_counter() - t0
    results = [
        {
            "task": t,
            "variant": variant,
            "metric": per_task[t]["metric"],
            "value": sum(per_task[t]["scores"]) / len(per_task[t]["scores"]),
            "n": len(per_task[t]["scores"]),
            "n_unparsable": per_task[t]["bad"],
        }
        for t in sorted(per_task, key=_task_order)
    ]
    metrics = {
        "eval_set": name,
        "n_rows": len(rows),
        "results": results,
        "elapsed_s": round(elapsed, 4),
        "rows_per_s": round(len(rows) / elapsed, 2) if elapsed > 0 else None,
    }
    log.info("%s: batch size %s on %s (decode %s)", name, batch_size, model.device,
             decode_method(decode, model.device, cuda_graphs))  # fmt: skip
    return samples, metrics


def evaluate_checkpoint(
    *,
    checkpoint: str,
    eval_sets: dict[str, str],
    out_metrics: str,
    out_samples: str,
    rows_per_set: int | None,
    batch_size: int | str,
    threads: int = 1,
    multitask_rows: int | None = None,
    meta: dict | None = None,
    device: str = "auto",
    decode: str = "auto",
    cuda_graphs: bool = True,
    precision: str = "auto",
    answer_parsing: str = "paper",
    max_new_tokens: str = "paper",
) -> None:
    """Evaluate one checkpoint on every eval set (name -> jsonl path) with one model load.

    Writes two files whatever the number of sets (paths.py `eval_metrics`/`eval_samples`):
    out_samples, one object per row with its `eval_set` first, then out_metrics, one
    `results` row per (eval_set, task) and per-set timing under `sets`; both atomically and
    the metrics last, so an existing metrics file implies its samples file.

    batch_size: an integer or "auto" (from free GPU memory); device: auto | cpu | cuda;
    decode: auto | loop | static | generate; cuda_graphs: capture the static decode step;
    precision: auto | fp32 | fp16 (eval_dtype); answer_parsing: paper | strict;
    max_new_tokens: paper | answer (evaluate_set)."""
    meta = dict(meta or {})
    info_path = Path(checkpoint) / META_FILE
    if info_path.is_file():  # fall back to the checkpoint's self-description
        info = read_json(info_path)
        meta.setdefault("model", info.get("model_name"))
        meta.setdefault("step", info.get("step"))
    model, tokenizer = load_checkpoint(checkpoint, threads, device, precision)
    ckpt_sha = checkpoint_sha256(checkpoint)
    decoders: dict = {}  # static decoders shared by the sets (one capture serves several)
    all_samples: list[dict] = []
    results: list[dict] = []
    sets: list[dict] = []
    for name, path in eval_sets.items():
        rows = read_rows(path)
        if rows_per_set is not None:
            rows = rows[:rows_per_set]
        if multitask_rows is not None and name.split(EVAL_SET_SEP)[0] == MULTITASK:
            rows = rows[:multitask_rows]  # the set is shuffled: a uniform sample, as the paper
        samples, partial = evaluate_set(
            model, tokenizer, name, rows, batch_size, decode=decode, cuda_graphs=cuda_graphs,
            decoders=decoders, answer_parsing=answer_parsing, max_new_tokens=max_new_tokens,
        )  # fmt: skip
        all_samples += ({"eval_set": name, **s} for s in samples)
        results += ({"eval_set": name, **r} for r in partial["results"])
        sets.append({k: v for k, v in partial.items() if k != "results"})
        summary = ", ".join(
            f"{r['task']} {r['metric']} {r['value']:.4g}" for r in partial["results"]
        )
        log.info(
            "%s: %d rows in %.2fs (%s rows/s): %s",
            name, len(rows), partial["elapsed_s"], partial["rows_per_s"], summary,
        )  # fmt: skip
    metrics = {
        "model": meta.get("model"),
        "step": meta.get("step"),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ckpt_sha,
        "eval_sets": list(eval_sets),
        "results": results,
        "sets": sets,
    }
    atomic_write_lines(out_samples, (json.dumps(s) for s in all_samples))
    atomic_write_json(out_metrics, metrics)  # last: its presence implies the samples
