"""Greedy evaluation of one checkpoint on many eval sets (one model load).

Per eval set it writes <set>.samples.jsonl (one object per row) and then <set>.json (metrics),
both atomically and the metrics last, so an existing metrics file implies its samples file.

Device: `device` auto | cpu | cuda (ftlab.device); weights stay float32 on every device (decoding
a 1.6 M-parameter model is launch-bound, and fp32 keeps greedy answers comparable across
devices). `batch_size="auto"` sizes batches from the GPU's free memory (64 on the CPU).
Not done: a CUDA-graph-captured decode step with a static KV cache. Left-padded prompts of
varying length need a static 2-D mask and cache positions per batch shape, i.e. one capture
per (batch, prompt-length) bucket; benchmarks/gpu_world.py measures the loop against HF
generate() so that this headroom can be judged on a GPU first.
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
from ftlab.device import auto_eval_batch_size, resolve_device
from ftlab.io import atomic_write_json, atomic_write_lines, checkpoint_sha256, read_json
from ftlab.paths import EVAL_SET_SEP
from ftlab.study import TASKS
from ftlab.tokenizer import load_tokenizer

log = logging.getLogger("ftlab.evaluate")


def device(name: str = "auto") -> torch.device:
    return resolve_device(name)


def load_checkpoint(path: str | Path, threads: int = 1, device: str = "auto"):
    """(model, tokenizer) of an HF checkpoint dir on `device`: eval mode, float32, left padding."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev).eval()
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    return model, tokenizer


def _left_pad(seqs: list[list[int]], pad_id: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids.to(dev), mask.to(dev)


@torch.inference_mode()
def _decode_loop(model, seqs, pad_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the KV cache; [B, <=max_new_tokens] generated ids.

    Why not generate(): for 5-10 new tokens its per-step overhead (logits processors, stopping
    criteria, cache bookkeeping) dominates a tiny model; this loop does the same arithmetic.
    """
    input_ids, mask = _left_pad(seqs, pad_id, model.device)
    # Left padding: positions count real tokens only, so a row's result ignores its padding.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    # Batches are length-sorted, so most have no padding: then no mask is needed at all (the
    # causal fast path gives the same result and skips building a 4-D mask every step).
    padded = not bool(mask.all())
    out = model(
        input_ids=input_ids,
        attention_mask=mask if padded else None,
        position_ids=pos,
        logits_to_keep=1,
    )
    done = torch.zeros(len(seqs), dtype=torch.bool, device=model.device)
    steps = []
    for t in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        nxt = nxt.masked_fill(done, eos_id)
        steps.append(nxt)
        done |= nxt == eos_id
        if done.all() or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask if padded else None,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.stack(steps, dim=1)


@torch.inference_mode()
def _decode_generate(model, seqs, pad_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
    """The same greedy decoding through HF generate() (kept for comparison/benchmarks)."""
    input_ids, mask = _left_pad(seqs, pad_id, model.device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return out[:, input_ids.shape[1] :]


def greedy_decode(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    method: str = "loop",
) -> list[str]:
    """Greedy continuation of every prompt, up to (excluding) <eos>, in the prompts' order.

    Prompts are tokenized with <bos>, sorted by length (so batches carry little padding),
    decoded in left-padded batches with the KV cache; method "loop" (default, faster) or
    "generate" (HF generate with do_sample=False).
    """
    if not prompts:
        return []
    decode = {"loop": _decode_loop, "generate": _decode_generate}[method]
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    enc = tokenizer(list(prompts))["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    outputs: list[str | None] = [None] * len(enc)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        gen = decode(model, [enc[i] for i in chunk], pad_id, eos_id, max_new_tokens).tolist()
        cut = [g[: g.index(eos_id)] if eos_id in g else g for g in gen]
        for i, text in zip(chunk, tokenizer.batch_decode(cut), strict=True):
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
    model, tokenizer, name: str, rows: list[str], batch_size: int | str
) -> tuple[list[dict], dict]:
    """Decode and score one eval set: (per-sample records, partial metrics dict)."""
    from ftlab.world.tasks import split_prompt, task_of_row

    variant = name.split(EVAL_SET_SEP, 1)[1] if EVAL_SET_SEP in name else ""
    pairs = [split_prompt(r) for r in rows]
    prompts = [p for p, _ in pairs]
    t0 = time.perf_counter()
    outputs: list[str] = []
    if rows:
        longest_prompt = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
        room = model.config.max_position_embeddings - longest_prompt
        max_new = max(1, min(max(len(a) for _, a in pairs) + 2, room))
        batch_size = resolve_batch_size(batch_size, model, len(rows), longest_prompt + max_new)
        outputs = greedy_decode(model, tokenizer, prompts, batch_size, max_new)
    samples, per_task = [], {}
    for row, (prompt, target), output in zip(rows, pairs, outputs, strict=True):
        task = task_of_row(row)
        score = float(task.score(output, row))
        parsed = task.parse(output) is not None
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
    log.info("%s: batch size %s on %s", name, batch_size, model.device)
    return samples, metrics


def evaluate_checkpoint(
    *,
    checkpoint: str,
    eval_sets: dict[str, str],
    out_metrics: dict[str, str],
    out_samples: dict[str, str],
    rows_per_set: int | None,
    batch_size: int | str,
    threads: int = 1,
    meta: dict | None = None,
    device: str = "auto",
) -> None:
    """Evaluate one checkpoint on every eval set (name -> jsonl path) with one model load.

    batch_size: an integer or "auto" (from free GPU memory); device: auto | cpu | cuda."""
    meta = dict(meta or {})
    info_path = Path(checkpoint) / META_FILE
    if info_path.is_file():  # fall back to the checkpoint's self-description
        info = read_json(info_path)
        meta.setdefault("model", info.get("model_name"))
        meta.setdefault("step", info.get("step"))
    model, tokenizer = load_checkpoint(checkpoint, threads, device)
    ckpt_sha = checkpoint_sha256(checkpoint)
    for name, path in eval_sets.items():
        rows = read_rows(path)
        if rows_per_set is not None:
            rows = rows[:rows_per_set]
        samples, partial = evaluate_set(model, tokenizer, name, rows, batch_size)
        metrics = {
            "model": meta.get("model"),
            "step": meta.get("step"),
            "eval_set": name,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": ckpt_sha,
            **{k: v for k, v in partial.items() if k != "eval_set"},
        }
        atomic_write_lines(out_samples[name], (json.dumps(s) for s in samples))
        atomic_write_json(out_metrics[name], metrics)  # last: its presence implies the samples
        results = metrics["results"]
        summary = ", ".join(f"{r['task']} {r['metric']} {r['value']:.4g}" for r in results)
        log.info(
            "%s: %d rows in %.2fs (%s rows/s): %s",
            name, len(rows), metrics["elapsed_s"], metrics["rows_per_s"], summary,
        )  # fmt: skip
