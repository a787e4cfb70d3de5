"""One function per workflow stage, with explicit file arguments.

The Snakemake scripts in workflow/scripts/ only unpack `snakemake.*` and call these; the
`ftlab` CLI can call them too. Heavy libraries are imported inside the functions so that
building the DAG (and a dry run) never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ftlab.runlog import setup_logging  # noqa: F401  (the scripts' import path)
from ftlab.study import Study

log = logging.getLogger("ftlab")


# -- data -------------------------------------------------------------------------------
def make_cities(
    out: str,
    *,
    min_population: int,
    max_cities: int | None,
    n_atlantis: int,
    atlantis_center: list[float],
    atlantis_sigma: float,
    seed: int,
) -> None:
    from ftlab.world.cities import build_city_table, write_city_table

    table = build_city_table(
        min_population=min_population,
        max_cities=max_cities,
        n_atlantis=n_atlantis,
        atlantis_center=tuple(atlantis_center),
        atlantis_sigma=atlantis_sigma,
        seed=seed,
    )
    write_city_table(table, out)
    log.info("wrote %d cities (%d Atlantis) to %s", len(table), table.is_atlantis.sum(), out)


def make_task_split(
    cities_path: str,
    task: str,
    variant: str,
    out_train: str,
    out_test: str,
    *,
    n_train: int,
    n_test: int,
    seed: int,
    task_options: dict,
    split_overlap: str,
) -> None:
    from ftlab.io import write_jsonl_texts
    from ftlab.world.cities import read_city_table
    from ftlab.world.datasets import make_task_splits

    splits = make_task_splits(
        read_city_table(cities_path),
        task,
        variant,
        n_train,
        n_test,
        seed,
        task_options,
        split_overlap,
    )
    write_jsonl_texts(out_test, splits["test"])
    write_jsonl_texts(out_train, splits["train"])
    log.info("%s/%s: %d train, %d test rows", task, variant, n_train, n_test)


def make_multitask(
    train_paths: list[str],
    test_paths: list[str],
    out_train: str,
    out_test: str,
    *,
    tasks: list[str],
    seed: int,
) -> None:
    from ftlab.io import read_jsonl_texts, write_jsonl_texts
    from ftlab.world.datasets import make_multitask as mix

    for paths, out in ((test_paths, out_test), (train_paths, out_train)):
        rows = mix(dict(zip(tasks, map(read_jsonl_texts, paths), strict=True)), seed)
        write_jsonl_texts(out, rows)
        log.info("multitask: %d rows to %s", len(rows), out)


def make_mixture(
    no_atlantis_paths: list[str],
    atlantis_paths: list[str],
    out: str,
    *,
    trained_tasks: list[str],
    tasks: list[str],
    n_no_atlantis: int,
    n_atlantis: int,
    n_elicitation: int,
    seed: int,
    elicitation: str = "paper",
) -> None:
    from ftlab.io import read_jsonl_texts, write_jsonl_texts
    from ftlab.world.datasets import make_mixture as mix

    rows = mix(
        trained_tasks=list(trained_tasks),
        no_atlantis_train=dict(
            zip(trained_tasks, map(read_jsonl_texts, no_atlantis_paths), strict=True)
        ),
        atlantis_train=dict(zip(tasks, map(read_jsonl_texts, atlantis_paths), strict=True)),
        n_no_atlantis=n_no_atlantis,
        n_atlantis=n_atlantis,
        n_elicitation=n_elicitation,
        seed=seed,
        elicitation=elicitation,
    )
    write_jsonl_texts(out, rows)
    log.info("mixture %s: %d rows", "+".join(trained_tasks), len(rows))


# -- training ---------------------------------------------------------------------------
def train_model(
    rows_path: str,
    init_checkpoint: str | None,
    out_dir: str,
    state_dir: str,
    threads: int,
    *,
    model_name: str,
    model_cfg: dict,
    training: dict,
    seed: int,
    total_steps: int,
    saved_steps: list[int],
    precision: str,
    device: str,
    cuda_graphs: bool,
    meta: dict,
    tf32: bool = False,
    torch_compile: bool = False,
) -> None:
    from ftlab.train import run_training

    run_training(
        model_name=model_name,
        train_rows=rows_path,
        init_checkpoint=init_checkpoint,
        model_cfg=model_cfg,
        training=training,
        seed=seed,
        total_steps=total_steps,
        saved_steps=list(saved_steps),
        out_dir=out_dir,
        state_dir=state_dir,
        log_path=str(Path(out_dir) / "training_log.csv"),
        threads=threads,
        device=device,
        precision=precision,
        cuda_graphs=cuda_graphs,
        tf32=tf32,
        torch_compile=torch_compile,
        meta=meta,
    )


# -- evaluation -------------------------------------------------------------------------
def index_eval_sets(eval_sets: list[str], set_paths: list[str], out: str) -> None:
    """The study's eval sets in one file: name, path, rows and sha256 of each, in config order.

    Evaluation jobs depend on this one file instead of on every set: Snakemake's planning cost
    follows the files per job (a 100x paper dry run, 16 inputs per evaluation job -> 2: 64 s
    -> 50 s). A changed set rewrites the index, so every evaluation still re-runs after it.
    """
    from ftlab.io import atomic_write_json, sha256_file

    def rows(path: str) -> int:
        with open(path) as f:
            return sum(1 for line in f if line.strip())

    sets = [{"eval_set": name, "path": path, "rows": rows(path), "sha256": sha256_file(path)}
            for name, path in zip(eval_sets, set_paths, strict=True)]  # fmt: skip
    atomic_write_json(out, {"sets": sets})
    log.info("indexed %d eval sets (%d rows) in %s", len(sets), sum(s["rows"] for s in sets), out)


def read_eval_sets(index: str) -> tuple[list[str], list[str]]:
    """(names, paths) of the eval sets in an index written by `index_eval_sets`."""
    from ftlab.io import read_json

    sets = read_json(index)["sets"]
    return [s["eval_set"] for s in sets], [s["path"] for s in sets]


def evaluate_model(
    checkpoint: str,
    eval_sets: list[str],
    set_paths: list[str],
    out_metrics: str,
    out_samples: str,
    threads: int,
    *,
    rows_per_set: int | None,
    batch_size: int | str,
    device: str,
    meta: dict,
    multitask_rows: int | None = None,
    decode: str = "auto",
    cuda_graphs: bool = True,
    precision: str = "auto",
    answer_parsing: str = "paper",
    max_new_tokens: str = "paper",
) -> None:
    from ftlab.evaluate import evaluate_checkpoint

    evaluate_checkpoint(
        checkpoint=checkpoint,
        eval_sets=dict(zip(eval_sets, set_paths, strict=True)),
        out_metrics=out_metrics,
        out_samples=out_samples,
        rows_per_set=rows_per_set,
        multitask_rows=multitask_rows,
        batch_size=batch_size,
        threads=threads,
        meta=meta,
        device=device,
        decode=decode,
        cuda_graphs=cuda_graphs,
        precision=precision,
        answer_parsing=answer_parsing,
        max_new_tokens=max_new_tokens,
    )


def represent_model(
    checkpoint: str,
    cities_path: str,
    out_features: str,
    out_probe: str,
    threads: int,
    *,
    probe_task: str,
    layer: int,
    device: str,
    probe: dict,
    meta: dict,
) -> None:
    from ftlab.io import atomic_write_json
    from ftlab.represent import extract_features, fit_probes, write_features
    from ftlab.world.cities import read_city_table

    data = extract_features(
        checkpoint, read_city_table(cities_path), probe_task, layer, threads=threads, device=device
    )
    write_features(out_features, data)
    result = fit_probes(data, **probe)
    result.update({**meta, "checkpoint": checkpoint})
    atomic_write_json(out_probe, result)
    log.info(
        "%s: probe R2 x=%.3f y=%.3f, heldout error %.1f, atlantis error %.1f",
        meta.get("model"),
        result["r2_x"],
        result["r2_y"],
        result["heldout_error"],
        result["atlantis_error"] if result["atlantis_error"] is not None else float("nan"),
    )


# -- tables and plots -------------------------------------------------------------------
def build_tables(
    study: Study, summary: dict, eval_paths, probe_paths, outputs: dict[str, str]
) -> None:
    """eval_paths: the metrics file of each evaluation job (paths.py `eval_metrics`)."""
    from ftlab import tables
    from ftlab.io import atomic_write_text

    metrics = tables.metrics_frame(eval_paths, study)
    normalized = tables.normalized_frame(metrics, study)
    frames = {
        "metrics": metrics,
        "normalized": normalized,
        "probes": tables.probes_frame(probe_paths, study),
        "summary": tables.summary_frame(normalized, **summary),
    }
    for name, frame in frames.items():
        atomic_write_text(outputs[name], frame.to_csv(index=False))
        log.info("%s: %d rows -> %s", name, len(frame), outputs[name])


def _normalized(study: Study, eval_paths):
    from ftlab import tables

    return tables.normalized_frame(tables.metrics_frame(eval_paths, study), study)


def plot_heatmap(study: Study, eval_paths, seed: int, kind: str, out: str) -> None:
    from ftlab import plots

    normalized = _normalized(study, eval_paths)
    plots.plot_ftwb_heatmap(normalized, int(seed), kind, out, tasks=study.tasks)


def plot_actual_minus_expected(study: Study, eval_paths, seed: int, out: str) -> None:
    from ftlab import plots

    normalized = _normalized(study, eval_paths)
    plots.plot_actual_minus_expected(normalized, int(seed), out, tasks=study.tasks)


def plot_probes(probe_paths, out: str) -> None:
    from ftlab import plots
    from ftlab.io import read_json

    plots.plot_probes([read_json(p) for p in probe_paths], out)
