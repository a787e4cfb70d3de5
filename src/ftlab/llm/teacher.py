"""Teacher trajectories for SF-SFT: generate, verify, keep only the correct ones.

The teacher answers prompt_for(row, style); each generation is checked with rewards.is_correct
against the gold answer, and only correct ones become SFT records (rejection sampling). The
report records the pass rate (the seed study kept 43% on MATH).

Generation is a function `generate(prompts, n) -> [[text] * n per prompt]`, built here for
vLLM or HF transformers, or injected by tests.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ftlab.io import atomic_write_json, read_jsonl, write_jsonl
from ftlab.llm.data import prompt_for, sft_records
from ftlab.llm.rewards import extract_answer, is_correct

log = logging.getLogger("ftlab.llm.teacher")

BACKENDS = ("auto", "vllm", "hf")
GenerateFn = Callable[[list[str], int], list[list[str]]]


def choose_backend(backend: str) -> str:
    """ "auto": vLLM when it is importable and a GPU is present, else HF generate."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    return "vllm" if has_vllm and torch.cuda.is_available() else "hf"


def hf_generator(
    model_path: str, *, max_new_tokens: int, batch_size: int, temperature: float
) -> GenerateFn:
    """Batched HF generate (ftlab.llm.generate.HFGenerator); greedy at temperature 0."""
    from ftlab.llm.generate import HFGenerator

    gen = HFGenerator(model_path)

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        return gen.samples(
            prompts, n, max_new_tokens=max_new_tokens, batch_size=batch_size,
            temperature=temperature,
        )  # fmt: skip

    return generate


def vllm_generator(model_path: str, *, max_new_tokens: int, temperature: float) -> GenerateFn:
    """vLLM offline generation (imported lazily: vLLM is optional)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise RuntimeError("backend 'vllm' needs the vllm package (pip install ftlab[vllm])") from e

    llm = LLM(model=model_path)

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens)
        results = llm.generate(prompts, params)
        return [[o.text for o in r.outputs] for r in results]

    return generate


def verify_and_keep(
    rows: list[dict], generations: list[list[str]], fmt: str, style: str = "reasoning"
) -> tuple[list[dict], dict]:
    """SFT records of the correct generations, and counts.

    Every correct sample is kept (several per question when samples_per_question > 1).
    """
    if len(generations) != len(rows):
        raise ValueError(f"{len(generations)} generation lists for {len(rows)} questions")
    kept_rows, n_generated, solved = [], 0, 0
    for row, texts in zip(rows, generations, strict=True):
        good = [t for t in texts if is_correct(extract_answer(t, fmt), row, fmt)]
        n_generated += len(texts)
        solved += bool(good)
        kept_rows.extend({**row, "teacher_completion": t} for t in good)
    counts = {
        "n_questions": len(rows),
        "n_generated": n_generated,
        "n_kept": len(kept_rows),
        "pass_rate": len(kept_rows) / n_generated if n_generated else 0.0,
        "n_questions_solved": solved,
    }
    return sft_records(kept_rows, "teacher", style), counts


def generate_trajectories(
    *,
    teacher_model: str,
    rows_path: str,
    fmt: str,
    out_path: str,
    report_path: str,
    backend: str = "auto",
    max_new_tokens: int,
    batch_size: int,
    samples_per_question: int = 1,
    temperature: float = 0.0,
    limit: int | None = None,
    style: str = "reasoning",
    generate: GenerateFn | None = None,
) -> dict:
    """Generate, verify and keep teacher trajectories; writes out_path and report_path.

    rows_path: normalised rows jsonl. generate: an injected generator (tests); otherwise one
    is built for the chosen backend. Returns the report.
    """
    if samples_per_question > 1 and temperature <= 0:
        log.warning("%d samples per question at temperature 0 are identical", samples_per_question)
    rows = read_jsonl(rows_path)[:limit]
    t0 = time.perf_counter()
    if generate is None:
        backend = choose_backend(backend)
        if backend == "vllm":
            generate = vllm_generator(
                teacher_model, max_new_tokens=max_new_tokens, temperature=temperature
            )
        else:
            generate = hf_generator(
                teacher_model,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                temperature=temperature,
            )
    else:
        backend = "injected"
    log.info("teacher %s (%s): %d questions x %d", teacher_model, backend, len(rows),
             samples_per_question)  # fmt: skip
    prompts = [prompt_for(r, style) for r in rows]
    generations = generate(prompts, samples_per_question)
    records, counts = verify_and_keep(rows, generations, fmt, style)
    write_jsonl(out_path, records)
    report = {
        **counts,
        "backend": backend,
        "teacher_model": teacher_model,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "samples_per_question": samples_per_question,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "fmt": fmt,
        "rows_path": str(Path(rows_path)),
    }
    atomic_write_json(report_path, report)
    log.info("kept %d of %d generations (pass rate %.3f)", counts["n_kept"],
             counts["n_generated"], counts["pass_rate"])  # fmt: skip
    return report
