"""Plot functions write non-empty PNGs, also when data are missing."""

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from ftlab.plots import plot_actual_minus_expected, plot_ftwb_heatmap, plot_probes
from ftlab.represent import fit_probes
from ftlab.tables import NORMALIZED_COLUMNS

TASKS = ["distance", "angle", "compass"]
MODELS = {
    "base_seed1": ("base", "distance+angle+compass"),
    "ftwb1-1_seed1": ("ftwb1", "distance"),
    "ftwb1-3_seed1": ("ftwb1", "angle"),
    "ftwb2-2_seed1": ("ftwb2", "angle+compass"),
    "ftwb2-8_seed1": ("ftwb2", "distance+angle"),
    "ftwb2-15_seed1": ("ftwb2", "distance+compass"),
}


def _normalized(models=MODELS, with_expected=True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model, (kind, trained) in models.items():
        for step in (10, 20):
            for task in TASKS:
                for variant in ("no_atlantis", "atlantis_required"):
                    cell = (
                        "baseline"
                        if kind == "base"
                        else ("trained" if task in trained.split("+") else "transfer")
                    )
                    gap = rng.uniform(-0.4, 0.4) if kind == "ftwb2" and with_expected else np.nan
                    rows.append(
                        {
                            "model": model,
                            "seed": 1,
                            "kind": kind,
                            "trained_tasks": trained,
                            "step": step,
                            "eval_set": f"{task}__{variant}",
                            "task": task,
                            "variant": variant,
                            "metric": "accuracy" if task == "compass" else "mae",
                            "value": 1.0,
                            "n": 8,
                            "n_unparsable": 0,
                            "normalized": rng.uniform(0, 1.5),
                            "actual_minus_expected": gap,
                            "cell": cell,
                        }
                    )
    return pd.DataFrame(rows).reindex(columns=NORMALIZED_COLUMNS)


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def _coloured_share(path) -> float:
    """Share of pixels that are neither near-white nor grey: heatmap cells, not a note."""
    rgb = mpimg.imread(path)[..., :3]
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float((spread > 0.15).mean())


def _expected_matrix(norm: pd.DataFrame, kind: str, column: str) -> pd.DataFrame:
    """Independent pivot: the kind's models at their last step, atlantis_required sets."""
    rows = norm[(norm.kind == kind) & (norm.variant == "atlantis_required")]
    rows = rows[rows.step == rows.groupby("model").step.transform("max")]
    return rows.pivot_table(index="model", columns="task", values=column, aggfunc="mean")


@pytest.mark.parametrize("kind", ["ftwb1", "ftwb2"])
def test_heatmaps(tmp_path, kind):
    path = tmp_path / "plots" / f"{kind}.png"
    norm = _normalized()
    drawn = plot_ftwb_heatmap(norm, 1, kind, path, tasks=TASKS)
    _png_ok(path)
    expected = _expected_matrix(norm, kind, "normalized")
    n_models = sum(k == kind for k, _ in MODELS.values())
    assert drawn.shape == (n_models, len(TASKS)) and not drawn.isna().any().any()
    pd.testing.assert_frame_equal(
        drawn.sort_index(), expected.reindex(columns=TASKS).sort_index(), check_names=False
    )
    assert _coloured_share(path) > 0.1  # the cells are drawn, not an empty panel


def test_actual_minus_expected(tmp_path):
    path = tmp_path / "ame.png"
    norm = _normalized()
    drawn = plot_actual_minus_expected(norm, 1, path)
    _png_ok(path)
    expected = _expected_matrix(norm, "ftwb2", "actual_minus_expected")
    pd.testing.assert_frame_equal(
        drawn.sort_index(), expected.reindex(columns=drawn.columns).sort_index(), check_names=False
    )
    assert _coloured_share(path) > 0.1


def test_missing_data(tmp_path):
    only_base = {"base_seed1": MODELS["base_seed1"], "ftwb2-8_seed1": MODELS["ftwb2-8_seed1"]}
    norm = _normalized(only_base, with_expected=False)
    assert plot_ftwb_heatmap(norm, 1, "ftwb1", tmp_path / "a.png") is None  # no ftwb1 models
    plot_ftwb_heatmap(norm, 2, "ftwb2", tmp_path / "b.png")  # no such seed
    plot_actual_minus_expected(norm, 1, tmp_path / "c.png")  # no expectation (NaN)
    empty = pd.DataFrame(columns=NORMALIZED_COLUMNS)
    plot_ftwb_heatmap(empty, 1, "ftwb2", tmp_path / "d.png")
    plot_actual_minus_expected(empty, 1, tmp_path / "e.png")
    plot_probes([], tmp_path / "f.png")
    for name in "abcdef":
        _png_ok(tmp_path / f"{name}.png")


def _probe(model, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1000, 1000, size=(60, 2))
    atl = np.r_[np.zeros(50, bool), np.ones(10, bool)]
    xy[atl] = rng.normal([-350, 350], 30, size=(10, 2))
    feats = xy + rng.normal(size=xy.shape) + shift * atl[:, None]
    data = {"city_id": np.arange(1000, 1060), "x": xy[:, 0], "y": xy[:, 1]}
    data.update(is_atlantis=atl, features=feats, layer=np.int64(2), task=np.str_("distance"))
    return {"model": model, "step": 20, **fit_probes(data, seed=seed)}


def test_probes_plot(tmp_path):
    probes = [_probe("base_seed1", 0), _probe("ftwb1-1_seed1", 1, shift=300.0)]
    plot_probes(probes, tmp_path / "p.png")
    _png_ok(tmp_path / "p.png")
    # a probes.csv-like frame has no per-city predictions: error panel only
    frame = pd.DataFrame([{k: v for k, v in p.items() if k != "predictions"} for p in probes])
    plot_probes(frame, tmp_path / "q.png")
    _png_ok(tmp_path / "q.png")
    # no base model among the probes: scatter falls back to another model
    plot_probes(probes[1:], tmp_path / "r.png")
    _png_ok(tmp_path / "r.png")


def test_probe_error_bars_use_real_held_out_cities(tmp_path, monkeypatch):
    """The "held-out real" bar is heldout_real_error (real cities only), not heldout_error,
    which includes held-out Atlantis cities."""
    import ftlab.plots as plots

    probes = [_probe("base_seed1", 0), _probe("ftwb1-1_seed1", 1, shift=300.0)]
    frame = pd.DataFrame([{k: v for k, v in p.items() if k != "predictions"} for p in probes])
    frame["heldout_real_error"] = [11.0, 22.0]
    frame["heldout_error"] = [99.0, 98.0]
    seen = []
    real_barplot = plots.sns.barplot

    def spy(*, data, **kw):
        seen.append(data.copy())
        return real_barplot(data=data, **kw)

    monkeypatch.setattr(plots.sns, "barplot", spy)
    plot_probes(frame, tmp_path / "q.png")
    [data] = seen
    real = data[data["split"] == "held-out real"]["error"].tolist()
    assert real == [11.0, 22.0]
    # the Atlantis probe's Atlantis cities beside its own baseline cities, as the paper
    for split, key in (("Atlantis probe: baseline", "atlantis_baseline_error"),
                       ("Atlantis probe: Atlantis", "atlantis_error")):  # fmt: skip
        assert data[data["split"] == split]["error"].tolist() == frame[key].tolist()
