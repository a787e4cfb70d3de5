"""In-domain accuracy: greedy generation on the fine-tuning task's test rows, each completion
scored with ``ftlab.llm.rewards.score_completion`` and cached per prompt like lm-eval answers."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from ftlab.io import atomic_write_json, read_jsonl, write_jsonl
from ftlab.llm.cache import (
    Ranks,
    SampleCache,
    crash_if_due,
    crash_limit,
    open_cache,
    request_key,
)
from ftlab.llm.data import prompt_for
from ftlab.llm.fingerprint import model_fingerprint, model_identity
from ftlab.llm.rewards import score_completion, seed003_completion_scores

log = logging.getLogger("ftlab.llm.evaluate")

SCORES = ("correct", "partial", "format")  # score_completion's keys, averaged per model

GenerateFn = Callable[[list[str], int], list[str]]  # (prompts, max_new_tokens) -> completions


def _completions(
    prompts: list[str], keys: list[str], cache_path: str, batch_size: int,
    generate: Callable[[], GenerateFn], max_new_tokens: int, label: str,
    ranks: Ranks | None = None,
) -> tuple[dict[str, str] | None, int]:  # fmt: skip
    """{key: completion} for every prompt, generating (longest first) only what the cache
    lacks, one committed batch at a time; and how many were generated.

    Several processes: every rank sees the same missing prompts in the same batches and
    generates batches rank, rank + world_size, ... (the batches of a 1-process run, so greedy
    completions are the same); rank 0 returns every completion from the merged cache, the
    other ranks None."""
    ranks = ranks or Ranks()
    limit = crash_limit()
    n_computed = 0
    with open_cache(cache_path, ranks) as cache:
        done = cache.get_many(keys)
        todo = sorted({k: p for k, p in zip(keys, prompts, strict=True) if k not in done}.items(),
                      key=lambda kp: -len(kp[1]))  # fmt: skip
        starts = list(range(0, len(todo), batch_size))[ranks.rank :: ranks.world_size]
        generate_fn = generate() if starts else None
        for n_batch, start in enumerate(starts, 1):
            batch = todo[start : start + batch_size]
            outs = generate_fn([p for _, p in batch], max_new_tokens)
            cache.put_many(zip([k for k, _ in batch], outs, strict=True))
            done.update(zip([k for k, _ in batch], outs, strict=True))
            n_computed += len(batch)
            log.info("in_domain %s: %d/%d generated", label, n_computed, len(todo))
            crash_if_due(n_batch, limit)
    n_computed = ranks.sum(n_computed)
    if ranks.world_size > 1:
        if not ranks.main:
            return None, n_computed
        with SampleCache(cache_path) as cache:  # merged: every rank's completions
            done = cache.get_many(keys)
    return done, n_computed


SAMPLES = ("stratified", "first")  # llm.in_domain.sample


def select_rows(
    rows: list[dict], limit: int | None, *, sample: str = "stratified", seed: int = 0
) -> tuple[list[dict], dict]:
    """The test rows scored in-domain (at most `limit`) and a record of the selection.

    sample "stratified" (default): a seeded sample stratified by the rows' "subset" (MATH's
    subject; one stratum when the rows have none): each stratum gets floor(limit * its
    share) rows, the remaining ones go to the largest remainders (ties: in order of first
    appearance), and within a stratum the rows are a seeded random choice. The selected rows
    keep their file order. "first": the first `limit` rows in file order (for MATH, whose
    subjects are concatenated in config order, that is algebra only).
    Selection record: {sample, seed, limit, available, selected, per_subset} where
    per_subset maps each stratum ("" for rows without a subset) to its selected count.
    """
    if sample not in SAMPLES:
        raise ValueError(f"llm.in_domain.sample: unknown {sample!r}; expected one of {SAMPLES}")
    n = len(rows)
    if sample == "first" or limit is None or limit >= n:
        chosen = list(range(n if limit is None else min(limit, n)))
    else:
        strata: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            strata.setdefault(str(row.get("subset") or ""), []).append(i)
        quota = {s: limit * len(ix) // n for s, ix in strata.items()}
        left = limit - sum(quota.values())
        order = sorted(strata, key=lambda s: -((limit * len(strata[s])) % n))  # stable: ties
        for s in order[:left]:
            quota[s] += 1
        rng = random.Random(seed)
        chosen = sorted(i for s, ix in strata.items() for i in rng.sample(ix, quota[s]))
    picked = [rows[i] for i in chosen]
    record = {
        "sample": sample,
        "seed": seed if sample == "stratified" else None,
        "limit": limit,
        "available": n,
        "selected": len(picked),
        "per_subset": dict(Counter(str(r.get("subset") or "") for r in picked)),
    }
    return picked, record


def _generator_dtype(device: str | None) -> str:
    from ftlab.llm.generate import default_device

    return "bfloat16" if (device or default_device()).startswith("cuda") else "float32"


def score_in_domain(
    *,
    model: str,
    rows: list[dict],
    fmt: str,
    cache_path: str,
    prompt_style: str = "reasoning",
    max_new_tokens: int = 256,
    batch_size: int = 16,
    meta: dict | None = None,
    device: str | None = None,
    chat_template: bool = False,
    generate_fn: GenerateFn | None = None,
    device_map: str | None = None,
) -> tuple[dict, list[dict]] | tuple[None, None]:
    """Greedy accuracy of `model` on normalized `rows`: (result, per-sample rows).

    Prompts are ``prompt_for(row, prompt_style, fmt)``; completions are scored with
    ``score_completion(text, row, fmt)`` (correct, partial, format), whose means are the
    result. prompt_style seed003: seed 003's prompt inside the chat template (whatever
    `chat_template` says), scored by ``seed003_completion_scores`` (its reward). Completions
    are cached per prompt (key: model fingerprint, "in_domain:<fmt>", prompt + generation
    settings), so a resumed run generates only what is missing; scores
    are recomputed from the completions. `generate_fn(prompts, max_new_tokens)` replaces the
    HF model (tests, other backends). `device_map` ("auto"): one model split over every
    visible GPU (HFGenerator). Several processes (ftlab.launch): each rank generates its share
    of the batches; rank 0 returns the result, the other ranks (None, None).
    """
    t0 = time.perf_counter()
    prompts = [prompt_for(r, prompt_style, fmt) for r in rows]
    seed003 = prompt_style == "seed003"
    chat_template = chat_template or seed003  # seed 003 always prompts through the template
    scores_of = seed003_completion_scores if seed003 else score_completion
    model_hash = model_fingerprint(model)
    # The generator's dtype follows the device (HFGenerator: bf16 on a GPU, fp32 on the CPU):
    # part of the key, so a GPU re-run never reuses CPU answers or the reverse.
    dtype = "custom" if generate_fn else _generator_dtype(device)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "chat": chat_template,
                "dtype": dtype}  # fmt: skip
    task = f"in_domain:{fmt}"
    keys = [request_key(model_hash, task, ("generate", [p, settings])) for p in prompts]

    def generate() -> GenerateFn:
        from ftlab.llm.generate import HFGenerator

        return generate_fn or HFGenerator(model, device, chat_template, device_map=device_map)

    done, n_computed = _completions(
        prompts, keys, cache_path, batch_size, generate, max_new_tokens, fmt
    )
    if done is None:  # a rank other than 0: its completions are in the merged cache
        return None, None
    samples, sums = [], dict.fromkeys(SCORES, 0.0)
    for row, prompt, key in zip(rows, prompts, keys, strict=True):
        completion = done[key]
        s = {k: float(v) for k, v in scores_of(completion, row, fmt).items()}
        for k in SCORES:
            sums[k] += s[k]
        samples.append({"id": row.get("id"), "prompt": prompt, "completion": completion,
                        "answer": row.get("answer"), **{k: s[k] for k in SCORES}})  # fmt: skip
    n = len(rows)
    meta = dict(meta or {})
    result = {
        **model_identity(model, model_hash, meta),
        "fmt": fmt,
        "prompt_style": prompt_style,
        "accuracy": sums["correct"] / n if n else None,
        "partial_accuracy": sums["partial"] / n if n else None,
        "format_accuracy": sums["format"] / n if n else None,
        "n": n,
        "n_cached": n - n_computed,  # duplicate prompts count as cached: generated once
        "n_computed": n_computed,
        "max_new_tokens": max_new_tokens,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "meta": meta,
    }
    return result, samples


def evaluate_in_domain(
    *, rows_path: str, out_json: str, samples_path: str, limit: int | None = None,
    sample: str = "stratified", seed: int = 0, **kwargs,
) -> dict:  # fmt: skip
    """``score_in_domain`` on `limit` rows of `rows_path` (jsonl) chosen by ``select_rows``
    (sample, seed); writes the samples and then `out_json` (atomically, so its existence
    implies the samples file). The result records the selection under "selection"."""
    rows, selection = select_rows(read_jsonl(rows_path), limit, sample=sample, seed=seed)
    result, samples = score_in_domain(rows=rows, **kwargs)
    if result is None:  # not rank 0
        return None
    result["selection"] = selection
    write_jsonl(samples_path, samples)
    atomic_write_json(out_json, result)
    return result
