"""One function per workflow stage, with explicit file arguments.

The Snakemake scripts in workflow/scripts/ only unpack `snakemake.*` and call these; the
`ftlab` CLI can call them too. Heavy libraries are imported inside the functions so that
building the DAG (and a dry run) never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ftlab.runlog import setup_logging  # noqa: F401  (the scripts' import path)
from ftlab.study import Study, mixture_tasks

log = logging.getLogger("ftlab")


# -- data -------------------------------------------------------------------------------
def city_table(cfg: dict):
    """The city table (a DataFrame) that cfg's data section defines."""
    from ftlab.world.cities import build_city_table

    d = cfg["data"]
    return build_city_table(
        min_population=d["min_population"],
        max_cities=d["max_cities"],
        n_atlantis=d["n_atlantis"],
        atlantis_center=tuple(d["atlantis_center"]),
        atlantis_sigma=d["atlantis_sigma"],
        seed=d["seed"],
    )


def make_cities(cfg: dict, out: str) -> None:
    from ftlab.world.cities import write_city_table

    table = city_table(cfg)
    write_city_table(table, out)
    log.info("wrote %d cities (%d Atlantis) to %s", len(table), table.is_atlantis.sum(), out)


def split_sizes(cfg: dict, variant: str) -> tuple[int, int]:
    """(train rows, test rows) of one task's split; atlantis train rows hold the elicitation
    rows at their end (see ftlab.world.datasets.make_mixture)."""
    d = cfg["data"]
    if variant == "no_atlantis":
        n_train = d["pretrain_rows_per_task"]
    else:
        n_train = d["finetune_atlantis_rows"] + d["elicitation_rows"]
    return n_train, d["test_rows_per_set"]


def make_task_split(
    cfg: dict, cities_path: str, task: str, variant: str, out_train: str, out_test: str
) -> None:
    from ftlab.world.cities import read_city_table
    from ftlab.world.datasets import make_task_splits, write_jsonl

    n_train, n_test = split_sizes(cfg, variant)
    splits = make_task_splits(
        read_city_table(cities_path),
        task,
        variant,
        n_train,
        n_test,
        cfg["data"]["seed"],
        task_options={"inside_sampler": cfg["data"]["inside_sampler"]},
    )
    write_jsonl(out_test, splits["test"])
    write_jsonl(out_train, splits["train"])
    log.info("%s/%s: %d train, %d test rows", task, variant, n_train, n_test)


def make_multitask(
    cfg: dict, train_paths: list[str], test_paths: list[str], out_train: str, out_test: str
) -> None:
    from ftlab.world.datasets import make_multitask as mix
    from ftlab.world.datasets import read_jsonl, write_jsonl

    seed = cfg["data"]["seed"]
    tasks = Study(cfg).tasks  # the rule lists its inputs in this order
    for paths, out in ((test_paths, out_test), (train_paths, out_train)):
        rows = mix(dict(zip(tasks, map(read_jsonl, paths), strict=True)), seed)
        write_jsonl(out, rows)
        log.info("multitask: %d rows to %s", len(rows), out)


def make_mixture(
    cfg: dict, mixture: str, no_atlantis_paths: list[str], atlantis_paths: list[str], out: str
) -> None:
    from ftlab.world.datasets import make_mixture as mix
    from ftlab.world.datasets import read_jsonl, write_jsonl

    trained = mixture_tasks(mixture)
    d = cfg["data"]
    # Inputs come in the order of the study's tasks (see rules/common.smk: mixture_inputs).
    tasks = Study(cfg).tasks
    rows = mix(
        trained_tasks=list(trained),
        no_atlantis_train=dict(zip(trained, map(read_jsonl, no_atlantis_paths), strict=True)),
        atlantis_train=dict(zip(tasks, map(read_jsonl, atlantis_paths), strict=True)),
        n_no_atlantis=d["finetune_no_atlantis_rows"],
        n_atlantis=d["finetune_atlantis_rows"],
        n_elicitation=d["elicitation_rows"],
        seed=d["seed"],
    )
    write_jsonl(out, rows)
    log.info("mixture %s (%s): %d rows", mixture, "+".join(trained), len(rows))


# -- training ---------------------------------------------------------------------------
def train_model(
    cfg: dict,
    model: str,
    rows_path: str,
    init_checkpoint: str | None,
    out_dir: str,
    state_dir: str,
    threads: int,
) -> None:
    from ftlab.train import run_training

    spec = Study(cfg).model(model)
    run_training(
        model_name=model,
        train_rows=rows_path,
        init_checkpoint=init_checkpoint,
        model_cfg=cfg["model"],
        training=spec.training,
        seed=spec.seed,
        total_steps=spec.total_steps,
        saved_steps=list(spec.saved_steps),
        out_dir=out_dir,
        state_dir=state_dir,
        log_path=str(Path(out_dir) / "training_log.csv"),
        threads=threads,
        device=cfg.get("device", "auto"),
        precision=cfg.get("precision", "fp32"),
        cuda_graphs=cfg.get("cuda_graphs", True),
        meta={
            "study": cfg["study"],
            "kind": spec.kind,
            "trained_tasks": list(spec.trained_tasks),
            "mixture": spec.mixture or "multitask",
        },
    )


# -- evaluation -------------------------------------------------------------------------
def evaluate_model(
    cfg: dict,
    model: str,
    step: int,
    checkpoint: str,
    eval_sets: list[str],
    set_paths: list[str],
    out_metrics: list[str],
    out_samples: list[str],
    threads: int,
) -> None:
    from ftlab.evaluate import evaluate_checkpoint

    evaluate_checkpoint(
        checkpoint=checkpoint,
        eval_sets=dict(zip(eval_sets, set_paths, strict=True)),
        out_metrics=dict(zip(eval_sets, out_metrics, strict=True)),
        out_samples=dict(zip(eval_sets, out_samples, strict=True)),
        rows_per_set=cfg["eval"]["rows_per_set"],
        batch_size=cfg["eval"]["batch_size"],
        threads=threads,
        meta={"model": model, "step": int(step), "study": cfg["study"]},
        device=cfg.get("device", "auto"),
    )


def represent_model(
    cfg: dict,
    model: str,
    step: int,
    checkpoint: str,
    cities_path: str,
    out_features: str,
    out_probe: str,
    threads: int,
) -> None:
    from ftlab.io import atomic_write_json
    from ftlab.represent import extract_features, fit_probes, probe_options, write_features
    from ftlab.world.cities import read_city_table

    spec = Study(cfg).model(model)
    r = cfg["representations"]
    layer = min(r["layer"], cfg["model"]["layers"])
    data = extract_features(
        checkpoint,
        read_city_table(cities_path),
        spec.probe_task,
        layer,
        threads=threads,
        device=cfg.get("device", "auto"),
    )
    write_features(out_features, data)
    probe = fit_probes(data, **probe_options(r))
    probe.update({"model": model, "step": int(step), "checkpoint": checkpoint})
    atomic_write_json(out_probe, probe)
    log.info(
        "%s: probe R2 x=%.3f y=%.3f, heldout error %.1f, atlantis error %.1f",
        model,
        probe["r2_x"],
        probe["r2_y"],
        probe["heldout_error"],
        probe["atlantis_error"] if probe["atlantis_error"] is not None else float("nan"),
    )


# -- tables and plots -------------------------------------------------------------------
def build_tables(cfg: dict, eval_paths, probe_paths, outputs: dict[str, str]) -> None:
    from ftlab import tables
    from ftlab.io import atomic_write_text

    study = Study(cfg)
    metrics = tables.metrics_frame(eval_paths, study)
    normalized = tables.normalized_frame(metrics, study)
    frames = {
        "metrics": metrics,
        "normalized": normalized,
        "probes": tables.probes_frame(probe_paths, study),
        "summary": tables.summary_frame(normalized, **cfg["tables"]),
    }
    for name, frame in frames.items():
        atomic_write_text(outputs[name], frame.to_csv(index=False))
        log.info("%s: %d rows -> %s", name, len(frame), outputs[name])


def plot_heatmap(cfg: dict, eval_paths, seed: int, kind: str, out: str) -> None:
    from ftlab import plots, tables

    study = Study(cfg)
    normalized = tables.normalized_frame(tables.metrics_frame(eval_paths, study), study)
    plots.plot_ftwb_heatmap(normalized, int(seed), kind, out, tasks=study.tasks)


def plot_actual_minus_expected(cfg: dict, eval_paths, seed: int, out: str) -> None:
    from ftlab import plots, tables

    study = Study(cfg)
    normalized = tables.normalized_frame(tables.metrics_frame(eval_paths, study), study)
    plots.plot_actual_minus_expected(normalized, int(seed), out, tasks=study.tasks)


def plot_probes(cfg: dict, probe_paths, out: str) -> None:
    from ftlab import plots
    from ftlab.io import read_json

    plots.plot_probes([read_json(p) for p in probe_paths], out)
