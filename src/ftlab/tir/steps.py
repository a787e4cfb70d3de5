"""Stage functions of the TIR rules: explicit arguments in, files out (scripts stay thin)."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

from ftlab.io import atomic_write_json, atomic_write_text, read_json, read_jsonl, write_jsonl

log = logging.getLogger("ftlab.tir.steps")
BUILTIN_ARITH = "builtin:arith"


def prepare_rows(name: str, spec: dict, out: str) -> None:
    """Normalise a dataset to rows {id, question, answer}; every row keeps a string answer."""
    if spec["source"] == BUILTIN_ARITH:
        from ftlab.tir.tasks import arith_problems

        rows = arith_problems(spec["limit"] or 64, seed=spec["seed"], prefix=name)
    else:
        from ftlab.llm.data import read_source

        raw, origin = read_source(spec["source"], spec["split"])
        rows = []
        for i, row in enumerate(raw[: spec["limit"]] if spec["limit"] else raw):
            for key in ("question_field", "answer_field"):
                if spec[key] not in row:
                    raise ValueError(
                        f"tir.datasets.{name}: row {i} of {origin} has no field "
                        f"{spec[key]!r} (set tir.datasets.{name}.{key}; fields: {sorted(row)})"
                    )
            rows.append({"id": str(row.get("id", row.get("unique_id", f"{name}-{i}"))),
                         "question": str(row[spec["question_field"]]),
                         "answer": str(row[spec["answer_field"]])})  # fmt: skip
    if not rows:
        raise ValueError(f"tir.datasets.{name}: no rows")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"tir.datasets.{name}: problem ids are not unique")
    write_jsonl(out, rows)
    log.info("%s: %d rows", name, len(rows))


def build_tiny_base(settings: dict, prompt_template: str, seed: int, out_checkpoint: str) -> None:
    """A tiny char-level LM, warm-started by SFT on arithmetic tool-call traces."""
    import tempfile

    import torch

    from ftlab.llm.tiny import build_tiny_causal_lm
    from ftlab.tir.sft import sft_on_traces
    from ftlab.tir.tasks import arith_problems, tool_trace

    torch.set_num_threads(1)  # a tiny model: more threads only contend
    with tempfile.TemporaryDirectory() as tmp:
        raw = build_tiny_causal_lm(tmp, seed=seed, layers=settings["layers"],
                                   hidden=settings["hidden"], max_length=256)  # fmt: skip
        problems = arith_problems(settings["sft_problems"], seed=10_000 + seed, prefix="sft")
        examples = [(prompt_template.format(question=p["question"]),
                     tool_trace(p["question"], p["answer"])) for p in problems]  # fmt: skip
        if settings["sft_steps"]:
            sft_on_traces(raw, examples, out_checkpoint, steps=settings["sft_steps"],
                          lr=settings["lr"], seed=seed)  # fmt: skip
        else:
            import shutil

            shutil.copytree(raw, out_checkpoint)


def generate(
    model_path: str, rows_path: str, sampling: dict, *, prompt_template: str, backend: str,
    batch_size: int, seed: int, sandbox: dict, out_generations: str, out_info: str,
    gpus: int = 1,
) -> None:  # fmt: skip
    """Run the multi-turn loop n times per problem and record everything (no scoring).
    gpus: the job's GPUs, all holding one model (vLLM tensor parallelism, HF device_map)."""
    from ftlab.tir.generation import make_generator
    from ftlab.tir.rollout import run_rollouts
    from ftlab.tir.sandbox import Sandbox, SandboxLimits

    rows = read_jsonl(rows_path)
    problems = [{"id": r["id"], "prompt": prompt_template.format(question=r["question"])}
                for r in rows]  # fmt: skip
    gen = make_generator(
        backend, model_path, max_new_tokens=sampling["max_new_tokens"],
        temperature=sampling["temperature"], top_p=sampling["top_p"], seed=seed, gpus=gpus,
    )  # fmt: skip
    box = Sandbox(SandboxLimits.from_config(sandbox)) if sampling["tools"] else None
    start = time.perf_counter()
    trajs = run_rollouts(
        problems, sampling["n"], gen, box, max_turns=sampling["max_turns"],
        tools=sampling["tools"], count_tokens=gen.count_tokens,
        max_context_tokens=sampling["max_context_tokens"], batch_size=batch_size,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    write_jsonl(out_generations, [t.to_record() for t in trajs])
    atomic_write_json(out_info, {
        "model": model_path, "rows": rows_path, "sampling": sampling,
        "backend": type(gen).__name__, "prompt_template": prompt_template, "seed": seed,
        "sandbox": box.isolation if box else None, "n_samples": len(trajs), "gpus": gpus,
        "seconds": elapsed, "samples_per_second": len(trajs) / elapsed if elapsed else None,
    })  # fmt: skip
    log.info("%d samples in %.1f s (%.2f samples/s)", len(trajs), elapsed, len(trajs) / elapsed)


def score(generations: str, rows_path: str, scorer: dict, out_scores: str, out_scored: str) -> None:
    """Score a generations file under `scorer` settings (no model involved)."""
    from ftlab.tir.scoring import Scorer, metrics, score_samples

    samples = read_jsonl(generations)
    answers = {r["id"]: r["answer"] for r in read_jsonl(rows_path)}
    verdicts = score_samples(samples, answers, Scorer(**scorer))
    result = {"scorer": scorer, "generations": generations, **metrics(samples, verdicts)}
    write_jsonl(out_scored, verdicts)
    atomic_write_json(out_scores, result)


def table(scores: dict[str, str], out: str) -> None:
    """tables/tir_scores.csv: one row per (model, step, dataset, sampling, k)."""
    buf = io.StringIO()
    cols = ["model", "step", "dataset", "sampling", "k", "pass_at_k", "mean_turns",
            "tool_usage_rate", "void_turn_rate", "answer_rate", "seconds_per_sample"]  # fmt: skip
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for key, path in sorted(scores.items()):
        model, step, eval_set = key.split("|")
        dataset, sampling = eval_set.split("__")
        s = read_json(path)
        for k, value in s["pass_at_k"].items():
            writer.writerow({
                "model": model, "step": int(step), "dataset": dataset, "sampling": sampling,
                "k": int(k), "pass_at_k": value, "mean_turns": s["mean_turns"],
                "tool_usage_rate": s["tool_usage_rate"], "void_turn_rate": s["void_turn_rate"],
                "answer_rate": s["answer_rate"],
                "seconds_per_sample": s["seconds_per_sample"]["mean"],
            })  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, buf.getvalue())


def train(
    run: dict, grpo: dict, *, base_model: str, rows_path: str, prompt_template: str,
    sandbox: dict, scorer: dict, seed: int, out_dir: str, state_dir: str,
) -> None:  # fmt: skip
    from ftlab.tir.train import TIRRecipe, run_tir_grpo

    recipe = TIRRecipe(tools=run["tools"], mask_void_turns=run["mask_void_turns"],
                       max_turns=run["max_turns"], **grpo)  # fmt: skip
    run_tir_grpo(recipe, base_model=base_model, rows_path=rows_path,
                 prompt_template=prompt_template, sandbox_limits=sandbox, scorer=scorer,
                 out_dir=out_dir, state_dir=state_dir, seed=seed)  # fmt: skip
