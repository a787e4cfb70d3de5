"""One function per stage of an LLM study (kind: llm), called by the thin rule scripts.

Each takes exactly what its rule passes (``snakemake.params`` / ``input`` / ``output``), never
the whole config: the rule's params are the single record of the settings a result was made
with, and a changed setting re-runs the rule. Heavy libraries (torch, transformers, TRL,
lm-eval) are imported inside the functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ftlab.io import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl

log = logging.getLogger("ftlab.llm")


def job_plan(
    family: str, resources: dict, threads: int, *, one_model: bool, key: str,
    how: str = "device_map",
) -> tuple[object, dict]:  # fmt: skip
    """(launch param, SLURM resources) of an evaluation or teacher job (Snakefile time).

    one_model False: the family's plan - one process per GPU (or `processes` on CPU) through
    ftlab.launch, the work split by rank. True (`key`, the setting that asks for it, e.g.
    "llm.lm_eval.parallel: model", names it in errors): one
    process that holds every GPU of the job and splits one model over them (`how`:
    "device_map" or "vllm_tp", shown as the job's launcher, e.g. vllm_tp:2); it cannot span
    nodes. The launch param follows rules/common.smk's launch_plan: a dict when several
    processes run (recorded by Snakemake), else the Plan.
    """
    import dataclasses

    from ftlab.launch import LaunchError, plan_for, slurm_resources

    plan = plan_for(family, resources, threads)
    if not one_model:
        return (plan.to_dict() if plan.launched else plan), slurm_resources(plan)
    if plan.nodes > 1:
        raise LaunchError(
            f"config key 'resources.{family}.nodes' is {plan.nodes}, but with {key} one "
            "process holds the model on the GPUs of one node: set nodes: 1"
        )
    one = dataclasses.replace(plan, procs_per_node=1, tasks_per_node=1)
    shape = slurm_resources(one)
    if plan.gpus_per_node > 1:  # what a dry run shows: how the GPUs are used
        shape["launcher"] = f"{how}:{plan.gpus_per_node}"
    return one, shape


def build_tiny_base(seed: int, out_checkpoint: str) -> None:
    from ftlab.llm.tiny import build_tiny_causal_lm

    build_tiny_causal_lm(out_checkpoint, seed=seed)
    log.info("built tiny base model in %s", out_checkpoint)


def prepare_dataset(
    dataset: str, spec: dict, data_root: str | None, seed: int, out_train: str, out_test: str,
    out_report: str, section: str = "llm.datasets",
) -> None:  # fmt: skip
    """Normalize a dataset's train/test rows ({"id","question","answer","aliases","solution"})
    from its sources, and write the data report (rows read, kept, dropped by reason).

    spec: the dataset's validated config entry (llm.datasets.<dataset>); data_root: the hub-like
    local folder (llm.data_root); seed: the seed of the project's builtin fixtures. An entry
    without `boxed` / `shuffle_seed_<split>` (ftlab.mtl's datasets, whose schema has neither)
    keeps the balanced \\boxed{} rule and the sources' order it always had. section: where the
    entry lives in the config, for error messages (ftlab.mtl: "mtl.datasets").
    """
    from ftlab.llm.data import load_split
    from ftlab.llm.sources import parse_sources

    report = {"dataset": dataset}
    for split, out in (("train", out_train), ("test", out_test)):
        key = f"{section}.{dataset}.{split}"
        if spec.get(split) is None:
            raise ValueError(f"config key '{key}' is not set")
        sources = parse_sources(spec[split], spec[f"{split}_split"], key)
        try:
            rows, report[split] = load_split(
                sources, spec["format"], spec[f"limit_{split}"], data_root, seed,
                boxed=spec.get("boxed", "balanced"),
                shuffle_seed=spec.get(f"shuffle_seed_{split}"),
            )  # fmt: skip
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise type(e)(f"config key '{key}': {e}") from e
        write_jsonl(out, rows)
        r = report[split]
        log.info("%s/%s: %d rows (read %d, kept %d, dropped %s)", dataset, split, r["rows"],
                 r["read"], r["kept"], r["dropped"] or "none")  # fmt: skip
    declared = (spec.get("rows") or {}).get("train")
    if declared is not None and declared != report["train"]["rows"]:
        raise ValueError(
            f"config key '{section}.{dataset}.rows.train' declares {declared} train rows but "
            f"the sources give {report['train']['rows']} after filters and limit "
            f"(see the counts above); set it to {report['train']['rows']} - the SFT steps of "
            "an epochs-length run are computed from it"
        )
    atomic_write_json(out_report, report)


def _style(prompt_format: str) -> str:
    from ftlab.llm.data import PROMPT_FORMAT_STYLES

    if prompt_format not in PROMPT_FORMAT_STYLES:
        raise ValueError(
            f"config key 'llm.prompt_format': unknown {prompt_format!r} "
            f"(expected one of {list(PROMPT_FORMAT_STYLES)})"
        )
    return PROMPT_FORMAT_STYLES[prompt_format]


def check_record_count(records: int, declared: int | None, key: str, what: str) -> None:
    """An epochs-length run's steps were computed from `declared` records (config `key`)."""
    if declared is not None and declared != records:
        raise ValueError(
            f"config key '{key}' declares {declared} records but {what} has {records}: set it "
            f"to {records} (the run's steps and checkpoints are computed from it; `ftlab plan` "
            "shows the new grid)"
        )


def gt_sft_records(
    rows_path: str, out: str, fmt: str | None = None, prompt_format: str = "tags"
) -> None:
    """GT-SFT records of a dataset's train rows; fmt: its row format; prompt_format:
    llm.prompt_format (seed003: seed 003's prompts and targets)."""
    from ftlab.llm.data import sft_records

    style = _style(prompt_format)
    records = sft_records(read_jsonl(rows_path), "gt", style, fmt)
    write_jsonl(out, records)
    log.info("gt_sft records: %d -> %s", len(records), out)


def teacher_trajectories(
    teacher: str, settings: dict, fmt: str, rows_path: str, out: str, report: str, *,
    shards_dir: str, gpus: int = 0, declared: int | None = None, declared_key: str = "",
    prompt_format: str = "tags",
) -> None:  # fmt: skip
    """settings: the validated llm.teacher / llm.cf_teacher section (its `model` resolved to
    `teacher`); gpus: the job's GPUs; declared: the record count the config declares at
    `declared_key` (epochs-length runs); prompt_format: llm.prompt_format (the teacher's
    prompts, its check and its records' format).

    settings["parallel"] "model": this one process splits the teacher over the job's GPUs
    (vLLM tensor parallelism, `tensor_parallel_size` null = the GPUs; HF device_map="auto");
    "data": runs in every process of a launched job, each rank generating its shards.
    """
    from ftlab.llm.teacher import generate_trajectories

    split = settings.get("parallel", "model") == "model"

    result = generate_trajectories(
        teacher_model=teacher,
        rows_path=rows_path,
        fmt=fmt,
        out_path=out,
        report_path=report,
        # data: every rank has its own whole model on its GPU - HF generate (auto -> hf)
        backend=settings["backend"] if split else "hf",
        max_new_tokens=settings["max_new_tokens"],
        batch_size=settings["batch_size"],
        samples_per_question=settings["samples_per_question"],
        temperature=settings["temperature"],
        top_p=settings["top_p"],
        keep=settings["keep"],
        shard_size=settings["shard_size"],
        style=_style(prompt_format),
        shards_dir=shards_dir,
        tensor_parallel_size=(settings["tensor_parallel_size"] or max(1, gpus)) if split else 1,
        device_map="auto" if split and gpus > 1 else None,
    )
    if result is None:  # a rank other than 0: rank 0 wrote the records
        return
    log.info("teacher %s (%s): pass rate %.3f", teacher, fmt, result["pass_rate"])
    # After the records are written: a wrong declaration costs a config edit, not the teacher.
    check_record_count(result["n_kept"], declared, declared_key, f"{out}")


def train_run(
    *, run: dict, recipe: dict, base: str, data_path: str, out_dir: str, state_dir: str,
    study: str, checkpoint_dtype: str | None = None, prompt_format: str = "tags",
) -> None:  # fmt: skip
    """Train one run. run: {"method", "dataset", "fmt", "seed", "trainer", "records"} of the
    study's matrix (records: the declared record count its epochs were computed from, or
    None); recipe: the run's validated config section (llm.sft or llm.grpo with the run's own
    max_steps and save_steps); checkpoint_dtype: llm.checkpoint_dtype; prompt_format:
    llm.prompt_format (GRPO's prompts and reward; SFT records carry their own)."""
    from ftlab.llm import train
    from ftlab.llm.recipes import recipe_for

    if not any(line.strip() for line in Path(data_path).read_text().splitlines()):
        raise ValueError(
            f"{data_path} holds no training rows for {Path(out_dir).name}"
            + (
                " (the teacher kept no trajectory: see its teacher report)"
                if run["method"] in ("teacher_sft", "cf_sft")
                else ""
            )
        )
    if run.get("records") is not None:
        n = sum(1 for line in Path(data_path).read_text().splitlines() if line.strip())
        source = {"gt_sft": "train", "teacher_sft": "teacher", "cf_sft": "cf_teacher"}
        key = f"llm.datasets.{run['dataset']}.rows.{source[run['method']]}"
        check_record_count(n, run["records"], key, data_path)
    common = dict(
        base_model=base,
        out_dir=out_dir,
        state_dir=state_dir,
        seed=run["seed"],
        meta={"study": study, "method": run["method"], "dataset": run["dataset"]},
    )
    hp = recipe_for(run["trainer"], recipe)
    if run["trainer"] == "sft":
        train.run_sft(hp, records_path=data_path, checkpoint_dtype=checkpoint_dtype, **common)
    else:
        train.run_grpo(
            hp, rows_path=data_path, fmt=run["fmt"], checkpoint_dtype=checkpoint_dtype,
            prompt_format=prompt_format, **common,
        )  # fmt: skip


def evaluate_point(
    *,
    model_name: str,
    step: int,
    model_path: str,
    test_rows: dict[str, str],
    formats: dict[str, str],
    benchmarks: dict[str, str],
    lm_eval: dict,
    in_domain: dict,
    outputs: dict[str, str],
    cache_path: str,
    study: str,
    release_weights: bool = False,
    gpus: int = 0,
) -> None:
    """Score one checkpoint (or the base model) on the lm-eval benchmarks and in-domain sets.

    test_rows / formats: test rows file and row format per dataset; benchmarks, lm_eval,
    in_domain: the validated llm sections of those names; cache_path: this checkpoint's own
    cache file; release_weights: delete the checkpoint's weights once everything is written
    (llm.delete_weights, decided per checkpoint by the rule); gpus: the job's GPUs (one model
    over all of them with lm_eval.parallel: model, or vLLM's tensor parallelism).

    Runs in every process of a launched job (lm_eval.parallel: data): the ranks share the
    documents and prompts; rank 0 writes the results and releases the weights.
    """
    from ftlab.llm.cache import Ranks
    from ftlab.llm.in_domain import score_in_domain, select_rows
    from ftlab.llm.lm_eval_runner import lm_eval_options, run_lm_eval
    from ftlab.llm.weights import delete_weights, weights_deleted

    deleted = weights_deleted(model_path) if Path(model_path).is_dir() else None
    if deleted:
        raise FileNotFoundError(
            f"{model_path}: its weights were deleted at {deleted['deleted_at']} after its "
            "evaluations (llm.delete_weights) - to evaluate it again, delete the run's models/ "
            "folder so it is retrained"
        )
    meta = {"model": model_name, "step": int(step), "study": study}
    run_lm_eval(
        model=model_path,
        benchmarks=benchmarks,
        out_json=outputs["lm_eval"],
        samples_path=outputs["lm_eval_samples"],
        cache_path=cache_path,
        meta=meta,
        gpus=gpus,
        **lm_eval_options(lm_eval),
    )
    # The in-domain generator splits one model over the GPUs when lm-eval does.
    split = lm_eval.get("parallel") == "model" and gpus > 1
    results, samples = {}, []
    for dataset, rows_path in test_rows.items():
        selected, selection = select_rows(
            read_jsonl(rows_path), in_domain["limit"], sample=in_domain["sample"],
            seed=in_domain["seed"],
        )  # fmt: skip
        results[dataset], rows = score_in_domain(
            model=model_path,
            rows=selected,
            fmt=formats[dataset],
            cache_path=cache_path,
            prompt_style=in_domain["prompt_style"],
            max_new_tokens=in_domain["max_new_tokens"],
            batch_size=in_domain["batch_size"],
            meta=meta,
            device_map="auto" if split else None,
        )
        if results[dataset] is not None:
            results[dataset]["selection"] = selection
        samples += [{"dataset": dataset, **row} for row in rows or []]
    if not Ranks().main:  # rank 0 holds every rank's results
        return
    write_jsonl(outputs["in_domain_samples"], samples)
    atomic_write_json(outputs["in_domain"], {**meta, "datasets": results})  # last: complete
    if release_weights:  # every evaluation of this checkpoint is written by now
        delete_weights(model_path, f"llm.delete_weights: {model_name} step {step} evaluated")


def compare_point(
    *, model_name: str, step: int, base_samples: str, samples: str, benchmarks: dict[str, str],
    stats: dict, out: str,
) -> None:  # fmt: skip
    """Paired bootstrap of one checkpoint vs the base model on every benchmark (and their mean)
    from the two lm_eval.samples.jsonl files; stats: the validated llm.stats section."""
    from ftlab.llm.stats import compare_to_base

    result = compare_to_base(
        read_jsonl(base_samples), read_jsonl(samples), benchmarks,
        iters=stats["bootstrap_iters"], seed=stats["bootstrap_seed"],
        confidence=stats["confidence"],
    )  # fmt: skip
    atomic_write_json(out, {"model": model_name, "step": int(step), **result})
    m = result["mean"]
    log.info("%s step %d vs base: mean %+.4f [%+.4f, %+.4f]%s", model_name, step, m["estimate"],
             m["ci_low"], m["ci_high"], " significant" if m["significant"] else "")  # fmt: skip


def build_tables(
    lm_eval_paths: list[str], in_domain_paths: list[str], runs: dict, outputs: dict[str, str],
    comparison_paths: list[str] = (), confidence: float = 0.95,
) -> None:  # fmt: skip
    """runs: {run name: {"method", "dataset", "seed"}} of the study's matrix; comparison_paths:
    the checkpoints' vs_base.json files; confidence: llm.stats.confidence."""
    from ftlab.llm import analysis

    scores = analysis.benchmark_frame(lm_eval_paths, runs)
    comparisons = analysis.comparison_frame(comparison_paths)
    forgetting = analysis.forgetting_frame(scores, comparisons)
    frames = {
        "forgetting": forgetting,
        "summary": analysis.summary_frame(forgetting, comparisons, confidence),
        "in_domain": analysis.in_domain_frame(in_domain_paths, runs),
    }
    for name, frame in frames.items():
        atomic_write_text(outputs[name], frame.to_csv(index=False))
        log.info("%s: %d rows -> %s", name, len(frame), outputs[name])


def plot(which: str, tables: dict[str, str], out: str, confidence: float = 0.95) -> None:
    """`which` is a plot name of the contract: forgetting_summary, forgetting_<dataset> or
    in_domain_<dataset>; confidence: llm.stats.confidence (the level of the intervals)."""
    import pandas as pd

    from ftlab.llm import analysis

    if which == "forgetting_summary":
        analysis.plot_summary(pd.read_csv(tables["summary"]), out, confidence)
    elif which.startswith("forgetting_"):
        dataset = which.removeprefix("forgetting_")
        analysis.plot_forgetting(pd.read_csv(tables["forgetting"]), dataset, out, confidence)
    elif which.startswith("in_domain_"):
        dataset = which.removeprefix("in_domain_")
        analysis.plot_in_domain(pd.read_csv(tables["in_domain"]), dataset, out)
    else:
        raise ValueError(f"unknown LLM plot {which!r}")
