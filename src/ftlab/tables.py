"""Result tables of a study: tidy metrics, normalized improvements, probes, summary.

metrics.csv     one row per (model, step, eval set, task) from the eval metrics files.
normalized.csv  the per-task eval sets only (the multitask set stays in metrics.csv: its rows
                duplicate the per-task no_atlantis measurement on a mixed sample and are not part
                of the paper's normalization), with baselines, normalized improvement, expected
                generalization of two-task models and trained/transfer/baseline cell labels.
probes.csv      one row per probe.json (R^2 and errors, no per-city predictions).
summary.csv     per seed (and over seeds, seed "all") and kind: trained vs transfer normalized
                improvement and actual - expected for pairs with / without distance; the
                columns std_kind and pooling say how each mean/std was taken (see
                summary_frame; the defaults are the paper's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ftlab.metrics import expected_and_gap, normalized_improvement
from ftlab.paths import EVAL_SET_SEP, eval_set_name
from ftlab.study import FTWB1_TASKS, MULTITASK, VARIANTS, Study

METRIC_COLUMNS = [
    "model",
    "seed",
    "kind",
    "trained_tasks",
    "step",
    "eval_set",
    "task",
    "variant",
    "metric",
    "value",
    "n",
    "n_unparsable",
]
NORMALIZED_COLUMNS = METRIC_COLUMNS + [
    "baseline_standard",
    "baseline_atlantis",
    "normalized",
    "expected_raw",
    "expected",
    "actual_minus_expected",
    "cell",
]
PROBE_COLUMNS = [
    "model",
    "seed",
    "kind",
    "trained_tasks",
    "step",
    "task",
    "layer",
    "alpha",
    "r2_x",
    "r2_y",
    "heldout_error",
    "heldout_real_r2_x",
    "heldout_real_r2_y",
    "heldout_real_error",
    "train_error",
    "atlantis_error",
    "atlantis_baseline_error",  # the Atlantis probe's own non-Atlantis baseline (the paper's)
    "atlantis_r2_x",
    "atlantis_r2_y",
    "n_train",
    "n_heldout",
    "n_atlantis",
    "n_atlantis_baseline",
]
SUMMARY_COLUMNS = [
    "seed",
    "kind",
    "measure",
    "group",
    "mean",
    "std",
    "count",
    "std_kind",
    "pooling",
]
STD_KINDS = {"population": 0, "sample": 1}  # name -> ddof; the paper uses np.std (population)
ACROSS_SEEDS = ("paper", "pooled")
KIND_ORDER = {"base": 0, "ftwb1": 1, "ftwb2": 2}


def model_index(name: str) -> int:
    """ftwb2-12_seed1 -> 12; base models -> 0 (for ordering)."""
    head = name.split("_seed")[0]
    return int(head.split("-")[1]) if "-" in head else 0


def _sort(df: pd.DataFrame, study: Study) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    set_order = {s: i for i, s in enumerate(study.eval_sets())}
    task_order = {t: i for i, t in enumerate(study.tasks)}
    keys = pd.DataFrame(
        {
            "a": df["seed"],
            "b": df["kind"].map(KIND_ORDER),
            "c": df["model"].map(model_index),
            "d": df["step"],
            "e": df["eval_set"].map(set_order).fillna(len(set_order)),
            "f": df["task"].map(task_order).fillna(len(task_order)),
        },
        index=df.index,
    )
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return df.loc[order].reset_index(drop=True)


# -- metrics.csv ----------------------------------------------------------------------------
def metrics_frame(eval_json_paths: Iterable[str | Path], study: Study) -> pd.DataFrame:
    """Tidy table of every results entry (one per eval set and task) of the given metrics
    files (paths.py `eval_metrics`: one per evaluated checkpoint, every eval set in it)."""
    rows = []
    for path in eval_json_paths:
        with open(path) as fh:
            doc = json.load(fh)
        spec = study.model(doc["model"])  # unknown model -> KeyError naming the study
        for res in doc["results"]:
            rows.append(
                {
                    "model": spec.name,
                    "seed": spec.seed,
                    "kind": spec.kind,
                    "trained_tasks": "+".join(spec.trained_tasks),
                    "step": int(doc["step"]),
                    "eval_set": res["eval_set"],
                    "task": res["task"],
                    "variant": res["variant"],
                    "metric": res["metric"],
                    "value": float(res["value"]) if res["value"] is not None else math.nan,
                    "n": int(res["n"]),
                    "n_unparsable": int(res.get("n_unparsable", 0)),
                }
            )
    return _sort(pd.DataFrame(rows, columns=METRIC_COLUMNS), study)


# -- normalized.csv -------------------------------------------------------------------------
def _is_per_task_set(df: pd.DataFrame) -> pd.Series:
    return df["eval_set"].str.split(EVAL_SET_SEP).str[0] != MULTITASK


def _final_values(df: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """(model, eval_set, task) -> value at that model's last evaluated step."""
    if df.empty:
        return {}
    last = df.groupby("model")["step"].transform("max")
    final = df[df["step"] == last]
    return {
        (m, s, t): v
        for m, s, t, v in zip(
            final["model"], final["eval_set"], final["task"], final["value"], strict=True
        )
    }


def baselines(metrics: pd.DataFrame, study: Study) -> dict[tuple[int, str], tuple[float, float]]:
    """(seed, task) -> (baseline_standard, baseline_atlantis) from the seed's base model at its
    last evaluated step; NaN where the base model (or that set) was not evaluated."""
    final = _final_values(metrics[_is_per_task_set(metrics)])
    out = {}
    for seed in study.seeds:
        for base in study.models_of(seed=seed, kind="base"):
            for task in study.tasks:
                std = final.get((base.name, eval_set_name(task, VARIANTS[0]), task), math.nan)
                atl = final.get((base.name, eval_set_name(task, VARIANTS[1]), task), math.nan)
                out[(seed, task)] = (std, atl)
    return out


def _cell(kind: str, trained_tasks: str, task: str) -> str:
    if kind == "base":
        return "baseline"
    return "trained" if task in trained_tasks.split("+") else "transfer"


def normalized_frame(metrics: pd.DataFrame, study: Study) -> pd.DataFrame:
    """normalized.csv: the per-task rows of `metrics` (every evaluated step) plus
    baseline_standard, baseline_atlantis, normalized, expected_raw, expected,
    actual_minus_expected and cell.

    Expected generalization (ftwb2 rows only) uses the raw values of the same seed's ftwb1
    models of the two trained tasks on the same eval set, each at its last evaluated step
    (ftwb1 and ftwb2 run different step counts, so steps are not matched). NaN when a needed
    ftwb1 model was not evaluated.
    """
    df = metrics[_is_per_task_set(metrics)].copy().reset_index(drop=True)
    base = baselines(metrics, study)
    final = _final_values(df)
    ftwb1_of = {task: i for i, task in FTWB1_TASKS.items()}
    cols = {c: [] for c in NORMALIZED_COLUMNS[len(METRIC_COLUMNS) :]}
    for r in df.itertuples(index=False):
        b_std, b_atl = base.get((r.seed, r.task), (math.nan, math.nan))
        norm = normalized_improvement(r.value, b_std, b_atl, r.metric)
        raw = exp = gap = math.nan
        if r.kind == "ftwb2":
            singles = [
                final.get((f"ftwb1-{ftwb1_of[t]}_seed{r.seed}", r.eval_set, r.task), math.nan)
                for t in r.trained_tasks.split("+")
            ]
            raw, exp, gap = expected_and_gap(r.value, singles, b_std, b_atl, r.metric)
        for key, val in zip(
            cols,
            [b_std, b_atl, norm, raw, exp, gap, _cell(r.kind, r.trained_tasks, r.task)],
            strict=True,
        ):
            cols[key].append(val)
    for key, vals in cols.items():
        df[key] = pd.Series(vals, index=df.index, dtype=object if key == "cell" else float)
    return df[NORMALIZED_COLUMNS]


# -- probes.csv -----------------------------------------------------------------------------
def _model_step_from_path(path: Path) -> tuple[str, int]:
    """representations/<model>/checkpoint-<step>/probe.json -> (model, step)."""
    return path.parent.parent.name, int(path.parent.name.split("-")[-1])


def probes_frame(probe_json_paths: Iterable[str | Path], study: Study) -> pd.DataFrame:
    """One row per probe.json; model/step from the JSON, else from its path."""
    rows = []
    for path in probe_json_paths:
        path = Path(path)
        with open(path) as fh:
            doc = json.load(fh)
        model, step = _model_step_from_path(path)
        spec = study.model(doc.get("model", model))
        row = {
            "model": spec.name,
            "seed": spec.seed,
            "kind": spec.kind,
            "trained_tasks": "+".join(spec.trained_tasks),
            "step": int(doc.get("step", step)),
        }
        for col in PROBE_COLUMNS[len(row) :]:
            val = doc.get(col)
            row[col] = math.nan if val is None else val
        rows.append(row)
    df = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    if df.empty:
        return df
    keys = [df["seed"], df["kind"].map(KIND_ORDER), df["model"].map(model_index), df["step"]]
    order = pd.DataFrame({i: k for i, k in enumerate(keys)}).sort_values(list(range(4))).index
    return df.loc[order].reset_index(drop=True)


# -- summary.csv ----------------------------------------------------------------------------
def _stats(values: pd.Series, ddof: int) -> tuple[float, float, int]:
    v = values.dropna().astype(float)
    return (
        float(v.mean()) if len(v) else math.nan,
        float(v.std(ddof=ddof)) if len(v) > ddof else math.nan,
        int(len(v)),
    )


def _seed_mean_cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model index, task) cell: its normalized value averaged over seeds (NaNs
    skipped), as the paper's aggregated heatmap (np.mean of the per-seed matrices)."""
    keyed = df.assign(_index=df["model"].map(model_index))
    return keyed.groupby(["_index", "task", "cell"], as_index=False)["normalized"].mean()


def summary_frame(
    normalized: pd.DataFrame, std: str = "population", across_seeds: str = "paper"
) -> pd.DataFrame:
    """Per seed (then over all seeds as seed "all") and fine-tuned kind, at each model's last
    evaluated step, on the atlantis_required sets:
      measure "normalized", group trained | transfer: mean / std / count of cells;
      measure "actual_minus_expected" (ftwb2 only), group with_distance | without_distance:
      over all task cells of the two-task models whose pair does / does not contain distance.

    `std`: "population" (ddof 0, numpy's np.std as the paper prints) or "sample" (ddof 1).
    `across_seeds` (the seed "all" rows): "paper" = as the paper's scripts: normalized
    trained/transfer over the cells of the seed-averaged matrix (each model x task cell
    averaged over seeds first; plot_revision_exp1_ftwb2_heatmaps.py), actual - expected over
    every cell of every seed (plot_ftwb2_distance_delta_histogram.py); "pooled" = every
    cell of every seed for both measures. Columns std_kind and pooling record the choice
    (pooling: cells = one seed's cells, seed_mean_cells, pooled_cells).
    """
    if std not in STD_KINDS:
        raise ValueError(f"unknown std {std!r}; expected one of {tuple(STD_KINDS)}")
    if across_seeds not in ACROSS_SEEDS:
        raise ValueError(f"unknown across_seeds {across_seeds!r}; expected one of {ACROSS_SEEDS}")
    ddof = STD_KINDS[std]
    if normalized.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    last = normalized.groupby("model")["step"].transform("max")
    df = normalized[(normalized["step"] == last) & (normalized["variant"] == VARIANTS[1])]
    df = df[df["kind"] != "base"]
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    has_distance = df["trained_tasks"].str.split("+").apply(lambda ts: "distance" in ts)
    rows = []
    seeds = [(s, df["seed"] == s) for s in sorted(df["seed"].unique())]
    seeds.append(("all", pd.Series(True, index=df.index)))
    for seed, in_seed in seeds:
        for kind in ("ftwb1", "ftwb2"):
            sel = in_seed & (df["kind"] == kind)
            if not sel.any():
                continue
            for cell in ("trained", "transfer"):
                cells = df.loc[sel & (df["cell"] == cell)]
                pooling = "cells" if seed != "all" else "pooled_cells"
                if seed == "all" and across_seeds == "paper":
                    cells, pooling = _seed_mean_cells(cells), "seed_mean_cells"
                stats = _stats(cells["normalized"], ddof)
                rows.append([seed, kind, "normalized", cell, *stats, std, pooling])
            if kind == "ftwb2":
                pooling = "cells" if seed != "all" else "pooled_cells"
                groups = (("with_distance", has_distance), ("without_distance", ~has_distance))
                for group, mask in groups:
                    stats = _stats(df.loc[sel & mask, "actual_minus_expected"], ddof)
                    rows.append([seed, kind, "actual_minus_expected", group, *stats, std, pooling])
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["seed"] = out["seed"].astype(object)
    return out
