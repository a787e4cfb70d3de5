"""Teacher trajectories for SF-SFT: generate, verify, keep only the correct ones.

The teacher answers prompt_for(row, style); each generation is checked with rewards.is_correct
against the gold answer (reasoning style: only a generation with the full tag format, judged
on its closed <answer>), and only correct ones become SFT records (rejection sampling). The
report records the pass rate (the seed study kept 43% on MATH).

Generation is a function `generate(prompts, n) -> [[text] * n per prompt]`, built here for
vLLM (tensor parallel over the job's GPUs, for a 32B or 70B teacher) or HF transformers, or
injected by tests.

Resumable in shards: the questions are generated `shard_size` at a time and each finished
shard's generations are written to ``<shards_dir>/shard-<k>.jsonl`` (atomically, headed by a
key over the teacher - its name and content hash or hub commit -, the chosen backend, the
settings and the shard's questions). A job killed at its time limit
re-runs only the unfinished shards; a changed setting or question never reuses a shard. The
model is loaded only when some shard is missing. Seed 003 needed ~6 h for MATH's 7.4k questions.

Several GPUs (resources.teacher.gpus) are used in one of two ways (llm.teacher.parallel):
`model` (default) - one process holds one model split over the job's GPUs: vLLM tensor
parallelism, or HF `device_map="auto"` without vLLM (a 32B or 70B teacher); `data` - the
launcher starts one process per GPU, each with the whole model, and rank r generates shards
r, r + world_size, ... (a shard is generated exactly as by one process, so a greedy teacher
gives the same records); rank 0 then reads every shard and writes the records and report.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ftlab.io import atomic_write_json, read_jsonl, sha256_json, write_jsonl
from ftlab.llm.data import prompt_for, sft_records
from ftlab.llm.rewards import extract_answer, has_format, is_correct, seed003_score

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
    model_path: str, *, max_new_tokens: int, batch_size: int, temperature: float,
    device_map: str | None = None, top_p: float | None = None, chat_template: bool = False,
) -> GenerateFn:  # fmt: skip
    """Batched HF generate (ftlab.llm.generate.HFGenerator); greedy at temperature 0.
    device_map "auto": one model over every visible GPU; top_p None: the checkpoint's own;
    chat_template: each prompt is one user turn of the teacher's chat template."""
    from ftlab.llm.generate import HFGenerator

    gen = HFGenerator(model_path, device_map=device_map, chat_template=chat_template)

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        return gen.samples(
            prompts, n, max_new_tokens=max_new_tokens, batch_size=batch_size,
            temperature=temperature, top_p=top_p,
        )  # fmt: skip

    return generate


def vllm_generator(
    model_path: str, *, max_new_tokens: int, temperature: float, tensor_parallel_size: int = 1,
    top_p: float | None = None, chat_template: bool = False,
) -> GenerateFn:  # fmt: skip
    """vLLM offline generation (imported lazily: vLLM is optional), the weights split over
    `tensor_parallel_size` GPUs; top_p None: SamplingParams' default (1.0); chat_template:
    each prompt is one user turn, through LLM.chat (seed 003's call)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise RuntimeError("backend 'vllm' needs the vllm package (pip install ftlab[vllm])") from e

    llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size)

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        extra = {} if top_p is None else {"top_p": top_p}
        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, **extra)
        if chat_template:
            results = llm.chat([[{"role": "user", "content": p}] for p in prompts], params)
        else:
            results = llm.generate(prompts, params)
        return [[o.text for o in r.outputs] for r in results]

    return generate


def _verified(text: str, row: dict, fmt: str, style: str) -> bool:
    if style == "seed003":  # seed 003's check: compute_score(...) > 0.5
        return seed003_score(text, row, fmt) > 0.5
    if style == "reasoning":
        return has_format(text) and is_correct(extract_answer(text, fmt, True), row, fmt)
    return is_correct(extract_answer(text, fmt), row, fmt)


KEEP = ("all", "first")


def verify_and_keep(
    rows: list[dict], generations: list[list[str]], fmt: str, style: str = "reasoning",
    keep: str = "all",
) -> tuple[list[dict], dict]:  # fmt: skip
    """SFT records of the correct generations, and counts.

    keep "all": every correct sample is kept (several per question when samples_per_question
    > 1); "first": only a question's first correct sample in generation order (seed 003's
    generate_teacher_solutions.py), so at most one record per question. With
    the reasoning style a sample must also have the full tag format (rewards.has_format: one
    <reasoning>, one closed <answer>) and is judged on its tagged answer only, so a completion
    cut off at max_new_tokens (no closed </answer>) is never kept, whatever its last number.
    With the plain style (no tags) the answer is extracted as for in-domain scoring. With the
    seed003 style a sample is judged by seed 003's reward (rewards.seed003_score).
    """
    if keep not in KEEP:
        raise ValueError(f"unknown keep rule {keep!r}; expected one of {KEEP}")
    if len(generations) != len(rows):
        raise ValueError(f"{len(generations)} generation lists for {len(rows)} questions")
    kept_rows, n_generated, solved = [], 0, 0
    for row, texts in zip(rows, generations, strict=True):
        good = [t for t in texts if _verified(t, row, fmt, style)]
        good = good[:1] if keep == "first" else good
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
    return sft_records(kept_rows, "teacher", style, fmt), counts


SHARD_NAME = "shard-{:05d}.jsonl"


def _shard_generations(
    shard_path: Path, key: str, rows: list[dict], make_generate: Callable[[], GenerateFn],
    prompts: list[str], n: int,
) -> tuple[list[list[str]], bool]:  # fmt: skip
    """A shard's generations: from its file when that holds this exact key, else generated
    and written (atomically). Returns (generations, whether it was generated now)."""
    if shard_path.is_file():
        lines = read_jsonl(shard_path)
        if lines and lines[0].get("key") == key and len(lines) == len(rows) + 1:
            return [line["generations"] for line in lines[1:]], False
        log.info("%s: stale (settings or questions changed): generating again", shard_path.name)
    generations = make_generate()(prompts, n)
    if len(generations) != len(rows):
        raise ValueError(f"{len(generations)} generation lists for {len(rows)} questions")
    write_jsonl(
        shard_path,
        [
            {"key": key},
            *(
                {"id": r.get("id"), "generations": g}
                for r, g in zip(rows, generations, strict=True)
            ),
        ],
    )
    return generations, True


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
    top_p: float | None = None,
    keep: str = "all",
    limit: int | None = None,
    style: str = "reasoning",
    generate: GenerateFn | None = None,
    shard_size: int = 512,
    shards_dir: str | None = None,
    tensor_parallel_size: int = 1,
    device_map: str | None = None,
) -> dict | None:
    """Generate, verify and keep teacher trajectories; writes out_path and report_path.

    rows_path: normalised rows jsonl. generate: an injected generator (tests); otherwise one
    is built for the chosen backend when the first unfinished shard needs it. shards_dir:
    where finished shards are kept (default: beside out_path). tensor_parallel_size (vLLM) /
    device_map (HF, "auto"): one model over several GPUs. top_p: None = the backend's default
    (vLLM 1.0, HF the checkpoint's); keep: which correct samples become records (KEEP). Returns
    the report; in a launched
    job (several processes) each rank generates its shards and only rank 0 writes and returns
    the report (the others None).
    """
    from ftlab.llm.ranks import Ranks

    ranks = Ranks()
    if keep not in KEEP:  # before any generation
        raise ValueError(f"unknown keep rule {keep!r}; expected one of {KEEP}")
    if samples_per_question > 1 and temperature <= 0:
        log.warning("%d samples per question at temperature 0 are identical", samples_per_question)
    rows = read_jsonl(rows_path)[:limit]
    t0 = time.perf_counter()
    chat = style == "seed003"  # seed 003 prompts its teacher through the chat template
    chosen = "injected" if generate is not None else choose_backend(backend)
    built: list[GenerateFn] = [generate] if generate is not None else []

    def make_generate() -> GenerateFn:
        if not built:
            if chosen == "vllm":
                built.append(vllm_generator(
                    teacher_model, max_new_tokens=max_new_tokens, temperature=temperature,
                    tensor_parallel_size=tensor_parallel_size, top_p=top_p, chat_template=chat,
                ))  # fmt: skip
            else:
                built.append(hf_generator(
                    teacher_model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    temperature=temperature, device_map=device_map, top_p=top_p,
                    chat_template=chat,
                ))  # fmt: skip
        return built[0]

    from ftlab.llm.fingerprint import model_fingerprint

    # The shard key: the teacher's identity (a local folder's content hash; a hub id's cached
    # commit), the backend that generates (auto may pick vLLM on one run and HF on a resume:
    # their samples differ) and every generation setting.
    settings = {"teacher": teacher_model, "teacher_sha256": model_fingerprint(teacher_model),
                "backend": chosen, "fmt": fmt, "style": style, "n": samples_per_question,
                "max_new_tokens": max_new_tokens, "temperature": temperature}  # fmt: skip
    if top_p is not None:  # only when set: shards written before the setting existed still fit
        settings["top_p"] = top_p
    shards = Path(shards_dir) if shards_dir else Path(str(out_path) + ".shards")
    shards.mkdir(parents=True, exist_ok=True)
    n_shards = -(-len(rows) // shard_size) if rows else 0
    log.info("teacher %s (%s): %d questions x %d in %d shards of %d", teacher_model, chosen,
             len(rows), samples_per_question, n_shards, shard_size)  # fmt: skip
    if 1 < ranks.world_size and n_shards < ranks.world_size:
        log.warning("%d shards for %d processes: some stay idle (llm.teacher.shard_size)",
                    n_shards, ranks.world_size)  # fmt: skip

    def shard(k: int) -> tuple[list[list[str]], bool]:
        part = rows[k * shard_size : (k + 1) * shard_size]
        prompts = [prompt_for(r, style, fmt) for r in part]
        key = sha256_json({**settings, "questions": [[r.get("id"), r["question"]] for r in part]})
        return _shard_generations(
            shards / SHARD_NAME.format(k), key, part, make_generate, prompts, samples_per_question
        )

    n_resumed = 0
    for k in range(ranks.rank, n_shards, ranks.world_size):  # this rank's shards
        _, fresh = shard(k)
        n_resumed += not fresh
        log.info("shard %d/%d %s", k + 1, n_shards, "generated" if fresh else "kept from disk")
    n_resumed = ranks.sum(n_resumed)
    if not ranks.main:  # rank 0 reads every rank's shards
        return None
    # Every shard is on disk now; one that is not (or stale) is generated here.
    generations = [g for k in range(n_shards) for g in shard(k)[0]]
    records, counts = verify_and_keep(rows, generations, fmt, style, keep)
    write_jsonl(out_path, records)
    report = {
        **counts,
        "backend": chosen,
        "teacher_model": teacher_model,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "samples_per_question": samples_per_question,
        "temperature": temperature,
        "top_p": top_p,
        "keep": keep,
        "max_new_tokens": max_new_tokens,
        "fmt": fmt,
        "rows_path": str(Path(rows_path)),
        "shards": n_shards,
        "shards_resumed": n_resumed,
        "shard_size": shard_size,
        "tensor_parallel_size": tensor_parallel_size,
        "device_map": device_map,
        "processes": ranks.world_size,
    }
    atomic_write_json(report_path, report)
    log.info("kept %d of %d generations (pass rate %.3f)", counts["n_kept"],
             counts["n_generated"], counts["pass_rate"])  # fmt: skip
    return report
