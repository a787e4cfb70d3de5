"""Figures of a study; each function writes one PNG. Missing data gives an empty panel with a
note rather than an error, so a partial study still produces every plot target.

Heatmaps read normalized.csv rows at each model's last evaluated step on the
atlantis_required sets (the generalization the paper reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workflow jobs have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ftlab.study import TASKS  # noqa: E402
from ftlab.tables import model_index  # noqa: E402

ATLANTIS = "atlantis_required"


def _save(fig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _final_atlantis(normalized: pd.DataFrame, seed: int, kind: str) -> pd.DataFrame:
    """Rows of one seed and kind, last evaluated step per model, atlantis_required sets."""
    if normalized.empty:
        return normalized
    df = normalized[
        (normalized["seed"].astype(int) == int(seed))
        & (normalized["kind"] == kind)
        & (normalized["variant"] == ATLANTIS)
    ]
    return df[df["step"] == df.groupby("model")["step"].transform("max")]


def _matrix(df: pd.DataFrame, column: str, tasks: Sequence[str] | None) -> pd.DataFrame:
    """models (ordered by index) x tasks (canonical order) of `column`."""
    if tasks is None:
        tasks = [t for t in TASKS if t in set(df["task"])]
    models = sorted(df["model"].unique(), key=model_index)
    mat = df.pivot_table(index="model", columns="task", values=column, aggfunc="mean")
    return mat.reindex(index=models, columns=list(tasks)).astype(float)


def _row_label(model: str, trained: dict[str, str]) -> str:
    return f"{model.split('_seed')[0]} ({trained.get(model, '')})"


def _outline_trained(ax, mat: pd.DataFrame, trained: dict[str, str]) -> None:
    for i, model in enumerate(mat.index):
        for j, task in enumerate(mat.columns):
            if task in trained.get(model, "").split("+"):
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=2.5))


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def _model_task_heatmap(df: pd.DataFrame, column: str, tasks, **style):
    """Annotated models x tasks heatmap of `column` with the trained cells outlined."""
    mat = _matrix(df, column, tasks)
    trained = dict(zip(df["model"], df["trained_tasks"], strict=True))
    fig, ax = plt.subplots(figsize=(1.1 * mat.shape[1] + 3, 0.45 * mat.shape[0] + 2))
    sns.heatmap(mat, ax=ax, annot=True, fmt=".2f", **style)
    _outline_trained(ax, mat, trained)
    ax.set_yticks(np.arange(len(mat)) + 0.5, [_row_label(m, trained) for m in mat.index])
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel("evaluated task (atlantis_required)")
    ax.set_ylabel("")
    return ax, mat


def plot_ftwb_heatmap(
    normalized: pd.DataFrame,
    seed: int,
    kind: str,
    path: str | Path,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame | None:
    """Normalized improvement on the atlantis_required sets: rows = the seed's `kind` models
    (ftwb1 / ftwb2) by index, columns = tasks; trained cells outlined; colour scale 0..1.5.
    Returns the models x tasks matrix drawn (None when there was nothing to draw)."""
    df = _final_atlantis(normalized, seed, kind)
    if df.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        _note(ax, f"no {kind} models evaluated for seed {seed}")
        ax.set_title(f"seed {seed} {kind}: normalized improvement (Atlantis)")
        _save(fig, path)
        return None
    ax, mat = _model_task_heatmap(
        df, "normalized", tasks, vmin=0, vmax=1.5, cmap="viridis",
        cbar_kws={"label": "normalized improvement"},
    )  # fmt: skip
    m_tr = _mean(df.loc[df["cell"] == "trained", "normalized"])
    m_tf = _mean(df.loc[df["cell"] == "transfer", "normalized"])
    ax.set_title(f"seed {seed} {kind}: trained {m_tr:.3f} / transfer {m_tf:.3f} (boxed = trained)")
    _save(ax.figure, path)
    return mat


def plot_actual_minus_expected(
    normalized: pd.DataFrame,
    seed: int,
    path: str | Path,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame | None:
    """ftwb2 models x tasks: actual - expected normalized improvement (atlantis_required),
    diverging colormap centred at 0; trained cells outlined. Returns the matrix drawn."""
    df = _final_atlantis(normalized, seed, "ftwb2")
    if df.empty or df["actual_minus_expected"].isna().all():
        fig, ax = plt.subplots(figsize=(6, 3))
        why = "no ftwb2 models" if df.empty else "no ftwb1 models to form the expectation"
        _note(ax, f"{why} evaluated for seed {seed}")
        ax.set_title(f"seed {seed} ftwb2: actual - expected")
        _save(fig, path)
        return None
    lim = max(0.5, float(np.nanmax(np.abs(df["actual_minus_expected"].to_numpy()))))
    ax, mat = _model_task_heatmap(
        df, "actual_minus_expected", tasks, cmap="RdBu", center=0, vmin=-lim, vmax=lim,
        cbar_kws={"label": "actual - expected"},
    )  # fmt: skip
    with_d = df["trained_tasks"].str.split("+").apply(lambda ts: "distance" in ts)
    m_w = _mean(df.loc[with_d, "actual_minus_expected"])
    m_wo = _mean(df.loc[~with_d, "actual_minus_expected"])
    ax.set_title(
        f"seed {seed} ftwb2 actual - expected: pairs with distance {m_w:+.3f}, without {m_wo:+.3f}"
    )
    _save(ax.figure, path)
    return mat


def _probe_records(probes) -> list[dict]:
    if probes is None:
        return []
    if isinstance(probes, pd.DataFrame):
        return probes.to_dict("records")
    return list(probes)


def _label(rec: dict, i: int) -> str:
    model = rec.get("model")
    return str(model) if isinstance(model, str) else f"probe {i}"


def plot_probes(probes, path: str | Path, max_scatter: int = 3) -> None:
    """(a) base model(s): true vs probe-predicted positions of held-out real cities and Atlantis
    cities (needs the per-city `predictions` of probe.json); (b) probe error per model: the
    main probe's held-out real cities, and the Atlantis probe's Atlantis cities against its own
    non-Atlantis baseline cities (the paper's comparison, evaluate_probe_generalization.py).
    `probes` = probe.json dicts (with "model") or a probes.csv frame."""
    recs = _probe_records(probes)
    with_preds = [
        (i, r) for i, r in enumerate(recs) if isinstance(r.get("predictions"), list | tuple)
    ]
    base = [(i, r) for i, r in with_preds if _label(r, i).startswith("base")]
    scatter = (base or with_preds)[:max_scatter]
    n_sc = max(1, len(scatter))
    n_models = len(recs)
    fig, axes = plt.subplots(
        1,
        n_sc + 1,
        figsize=(4.5 * n_sc + max(5, 0.3 * n_models), 4.5),
        gridspec_kw={"width_ratios": [1] * n_sc + [max(1.2, 0.07 * n_models)]},
        layout="constrained",
    )
    if not scatter:
        _note(axes[0], "no per-city probe predictions available")
    for ax, (i, rec) in zip(axes, scatter, strict=False):
        pred = pd.DataFrame(list(rec["predictions"]))
        for split, colour in (("heldout", "tab:blue"), ("atlantis", "tab:red")):
            p = pred[pred["split"] == split] if not pred.empty else pred
            if p.empty:
                continue
            ax.scatter(p["x"], p["y"], s=6, c="lightgray", label=f"{split} true")
            ax.scatter(p["x_hat"], p["y_hat"], s=6, c=colour, label=f"{split} predicted")
            if split == "atlantis":  # arrows show how far Atlantis lands from where it is
                for r in p.itertuples(index=False):
                    ax.plot([r.x, r.x_hat], [r.y, r.y_hat], c=colour, lw=0.3, alpha=0.5)
        ax.set_xlabel("x (10 x longitude)")
        ax.set_ylabel("y (10 x latitude)")
        ax.set_title(f"{_label(rec, i)}: layer {rec.get('layer')}", fontsize=9)
        ax.legend(fontsize=7, markerscale=2)
        if base == [] and ax is axes[0]:
            ax.text(0.02, 0.02, "no base model probe: showing others", transform=ax.transAxes)

    ax = axes[-1]
    rows = [
        {"model": _label(r, i), "split": split, "error": r.get(key)}
        for i, r in enumerate(recs)
        for split, key in (
            ("held-out real", "heldout_real_error"),
            ("Atlantis probe: baseline", "atlantis_baseline_error"),
            ("Atlantis probe: Atlantis", "atlantis_error"),
        )
    ]
    err = pd.DataFrame(rows, columns=["model", "split", "error"])
    err["error"] = pd.to_numeric(err["error"], errors="coerce")
    if err["error"].notna().any():
        sns.barplot(data=err, x="model", y="error", hue="split", ax=ax)
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        if (err["error"].dropna() > 0).all():
            ax.set_yscale("log")
        ax.set_ylabel("mean Euclidean probe error")
        ax.set_xlabel("")
    else:
        _note(ax, "no probe errors available")
    ax.set_title("probe error: held-out real cities; Atlantis vs its baseline")
    _save(fig, path)
