"""Stage functions of the TIR rules: explicit arguments in, files out (scripts stay thin)."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time
from pathlib import Path

from ftlab.io import (
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
    sha256_json,
    write_jsonl,
)

log = logging.getLogger("ftlab.tir.steps")
BUILTIN_ARITH = "builtin:arith"


def field_value(row: dict, path: str):
    """A row's field by name or dotted path: "reward_model.ground_truth", "prompt.0.content"
    (a number indexes a list), as SimpleTIR's parquet files keep the question and answer.
    KeyError names the part of the path that is missing."""
    if path in row:  # a top-level name wins, even one with a dot in it
        return row[path]
    value, done = row, []
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            at = ".".join(done) or "the row"
            what = sorted(value) if isinstance(value, dict) else (
                f"a list of {len(value)}" if isinstance(value, (list, tuple)) else repr(value)
            )  # fmt: skip
            raise KeyError(f"{part!r} is not in {at} ({what})")
        done.append(part)
    return value


def read_source_rows(name: str, spec: dict, data_root: str | None = None) -> list[dict]:
    """Raw rows of a dataset's source(s), read through ftlab.llm.sources: a local file or
    folder, a folder under `data_root` laid out like the hub's, or a hub id; a list of sources
    is read in order and concatenated."""
    from ftlab.llm.sources import BUILTIN, parse_sources, read, resolve

    key = f"tir.datasets.{name}.source"
    rows: list[dict] = []
    for src in parse_sources(spec["source"], spec["split"], key):
        if src.path.startswith(BUILTIN):
            raise ValueError(f"config key '{key}': {src.path} is not a TIR source "
                             f"({BUILTIN_ARITH} is, on its own)")  # fmt: skip
        try:
            rows += read(resolve(src, data_root))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"config key '{key}': {e}") from e
    return rows


def prepare_rows(name: str, spec: dict, out: str, data_root: str | None = None) -> None:
    """Normalise a dataset to rows {id, question, answer}; every row keeps a string answer.

    question_field / answer_field are names or dotted paths (field_value); the id is the row's
    `id`, else `unique_id`, else <name>-<index>."""
    if spec["source"] == BUILTIN_ARITH:
        from ftlab.tir.tasks import arith_problems

        rows = arith_problems(spec["limit"] or 64, seed=spec["seed"], prefix=name)
    else:
        raw = read_source_rows(name, spec, data_root)
        rows = []
        for i, row in enumerate(raw[: spec["limit"]] if spec["limit"] else raw):
            got = {}
            for key in ("question_field", "answer_field"):
                try:
                    got[key] = field_value(row, spec[key])
                except KeyError as e:
                    raise ValueError(
                        f"tir.datasets.{name}: row {i} has no field {spec[key]!r}: {e.args[0]} "
                        f"(set tir.datasets.{name}.{key}; a dotted path such as "
                        f"prompt.0.content reaches into a row)"
                    ) from None
            rows.append({"id": str(row.get("id", row.get("unique_id", f"{name}-{i}"))),
                         "question": str(got["question_field"]),
                         "answer": str(got["answer_field"])})  # fmt: skip
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


SHARD_NAME = "shard-{:05d}.jsonl"
# Test hook: a process exits abruptly (no cleanup, like SIGKILL) once it has generated and
# written this many shards.
STOP_ENV = "FTLAB_TIR_STOP_AFTER_SHARDS"
STOP_EXIT_CODE = 75


def shard_seed(seed: int, shard: int) -> int:
    """The sampling seed of one shard: a function of (tir.eval.seed, shard index) only, so a
    shard samples the same whichever process generates it and whatever ran before it."""
    return int(sha256_json({"seed": seed, "shard": shard})[:8], 16)


def shards_dir_of(out_generations: str) -> Path:
    """Where a generation job keeps its finished shards while it runs (beside its output)."""
    return Path(str(out_generations) + ".shards")


def _read_shard(path: Path, key: str, n_records: int) -> list[dict] | None:
    """A finished shard's records when its file holds exactly this key, else None (missing,
    cut short or stale: settings, model or problems changed)."""
    if not path.is_file():
        return None
    lines = read_jsonl(path)
    if lines and lines[0].get("key") == key and len(lines) == n_records + 1:
        return lines[1:]
    log.info("%s: stale (settings, model or problems changed): generating again", path.name)
    return None


def generate(
    model_path: str, rows_path: str, sampling: dict, *, prompt_template: str, backend: str,
    batch_size: int, seed: int, sandbox: dict, out_generations: str, out_info: str,
    gpus: int = 1, shard_size: int | None = None, threads: int | None = None,
) -> None:  # fmt: skip
    """Run the multi-turn loop n times per problem and record everything (no scoring).

    The problems are generated `shard_size` at a time (tir.eval.shard_size; None: one batch,
    batch_size // n problems, at least 1); shard k samples with its own seed (shard_seed) and
    its records are written, atomically and headed by a key over the model, the settings and
    its problems, to <generations>.shards/shard-<k>.jsonl as soon as it is done: a killed job
    re-runs only the missing shards, and the records do not depend on which process generated
    a shard.

    One process (tir.eval.parallel model, or a 1-GPU job): it generates every shard, the model
    over the job's `gpus` (vLLM tensor parallelism, HF device_map). Several processes
    (tir.eval.parallel data, started by ftlab.launch): each holds the whole model on its own
    device (HF generate; backend auto means hf there) and rank r generates shards r, r + N, ...;
    rank 0 then reads every shard in order (one missing is generated there), writes the
    generations file - the one a single process writes - and the info, and removes the shards.
    """
    from ftlab.llm.fingerprint import model_fingerprint
    from ftlab.llm.ranks import Ranks
    from ftlab.tir.generation import make_generator, pick_backend
    from ftlab.tir.rollout import run_rollouts
    from ftlab.tir.sandbox import Sandbox, SandboxLimits

    shard_size = shard_size or max(1, batch_size // sampling["n"])
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    ranks = Ranks()
    data_parallel = ranks.world_size > 1
    if data_parallel and backend == "vllm":
        raise ValueError(
            "tir.eval.backend vllm splits one model over the job's GPUs in one process; with "
            "several processes (tir.eval.parallel: data) every rank generates with HF"
        )
    chosen = "hf" if data_parallel else pick_backend(backend)
    rows = read_jsonl(rows_path)
    problems = [{"id": r["id"], "prompt": prompt_template.format(question=r["question"])}
                for r in rows]  # fmt: skip
    shards = [problems[i : i + shard_size] for i in range(0, len(problems), shard_size)]
    settings = {
        "model": model_fingerprint(model_path), "backend": chosen, "sampling": sampling,
        "prompt_template": prompt_template, "batch_size": batch_size, "seed": seed,
        "sandbox": sandbox, "shard_size": shard_size,
    }  # fmt: skip
    keys = [sha256_json({**settings, "shard": k, "problems": [p["id"] for p in part]})
            for k, part in enumerate(shards)]  # fmt: skip
    folder = shards_dir_of(out_generations)
    folder.mkdir(parents=True, exist_ok=True)
    if data_parallel and len(shards) < ranks.world_size:
        log.warning("%d shards for %d processes: some stay idle (tir.eval.shard_size)",
                    len(shards), ranks.world_size)  # fmt: skip
    log.info("%d problems x %d samples in %d shards of %d, %d process(es), backend %s",
             len(problems), sampling["n"], len(shards), shard_size, ranks.world_size,
             chosen)  # fmt: skip

    made: list = []  # the generator and sandbox, built when the first shard needs them

    def tools():
        if not made:
            device = str(ranks.device) if data_parallel else None
            gen = make_generator(
                chosen, model_path, max_new_tokens=sampling["max_new_tokens"],
                temperature=sampling["temperature"], top_p=sampling["top_p"], seed=seed,
                gpus=1 if data_parallel else gpus, device=device,
                stop_at_code=sampling["tools"], max_prompt_tokens=sampling["max_prompt_tokens"],
            )  # fmt: skip
            box = Sandbox(SandboxLimits.from_config(sandbox)) if sampling["tools"] else None
            made.extend([gen, box])
        return made

    def run_shard(k: int) -> list[dict]:
        gen, box = tools()
        gen.reseed(shard_seed(seed, k))
        trajs = run_rollouts(
            shards[k], sampling["n"], gen, box, max_turns=sampling["max_turns"],
            tools=sampling["tools"], count_tokens=gen.count_tokens,
            max_context_tokens=sampling["max_context_tokens"], batch_size=batch_size,
        )  # fmt: skip
        records = [t.to_record() for t in trajs]
        write_jsonl(folder / SHARD_NAME.format(k), [{"key": keys[k]}, *records])
        return records

    stop_after = int(os.environ.get(STOP_ENV) or 0)
    n_kept = n_made = 0
    for k in range(ranks.rank, len(shards), ranks.world_size):  # this process's shards
        n_records = len(shards[k]) * sampling["n"]
        if _read_shard(folder / SHARD_NAME.format(k), keys[k], n_records) is not None:
            n_kept += 1
            log.info("shard %d/%d kept from disk", k + 1, len(shards))
            continue
        run_shard(k)
        n_made += 1
        log.info("shard %d/%d generated", k + 1, len(shards))
        if stop_after and n_made >= stop_after:
            os._exit(STOP_EXIT_CODE)
    n_kept = ranks.sum(n_kept)  # also: every rank has written its shards
    by_rank = ranks.gather(n_made)  # shards generated by each process (info)
    if not ranks.main:
        return
    records: list[dict] = []
    for k, part in enumerate(shards):  # shard order = problem order, whoever generated them
        got = _read_shard(folder / SHARD_NAME.format(k), keys[k], len(part) * sampling["n"])
        records += got if got is not None else run_shard(k)
    elapsed = time.perf_counter() - start
    write_jsonl(out_generations, records)
    box = made[1] if made else None
    if box is None and sampling["tools"]:  # every shard came from disk: the same limits
        box = Sandbox(SandboxLimits.from_config(sandbox))
    atomic_write_json(out_info, {
        "model": model_path, "rows": rows_path, "sampling": sampling, "backend": chosen,
        "prompt_template": prompt_template, "seed": seed,
        "sandbox": box.isolation if box else None,
        "n_samples": len(records), "gpus": gpus, "processes": ranks.world_size,
        "shards": len(shards), "shard_size": shard_size, "shards_resumed": n_kept,
        "shards_generated_by_rank": by_rank,
        "seconds": elapsed, "samples_per_second": len(records) / elapsed if elapsed else None,
    })  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    log.info("%d samples in %.1f s (%.2f samples/s), %d of %d shards from disk", len(records),
             elapsed, len(records) / elapsed, n_kept, len(shards))  # fmt: skip


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
