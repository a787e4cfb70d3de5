"""Representation features and linear probes."""

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import ftlab
from ftlab.represent import (
    extract_features,
    features_from_model,
    fit_probes,
    read_features,
    write_features,
    write_json,
)
from ftlab.tokenizer import build_char_tokenizer


def _synthetic(n_real=400, n_atl=30, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    xy_real = rng.uniform(-1800, 1800, size=(n_real, 2))
    xy_atl = rng.normal([-350, 350], 30, size=(n_atl, 2))
    xy = np.concatenate([xy_real, xy_atl])
    A = rng.normal(size=(2, 16))
    feats = xy @ A / 1000 + noise * rng.normal(size=(len(xy), 16))
    return {
        "city_id": np.arange(1000, 1000 + len(xy)),
        "x": xy[:, 0],
        "y": xy[:, 1],
        "is_atlantis": np.r_[np.zeros(n_real, bool), np.ones(n_atl, bool)],
        "features": feats.astype(np.float32),
        "layer": np.int64(3),
        "task": np.str_("distance"),
    }


def test_probe_recovers_linear_map():
    data = _synthetic()
    res = fit_probes(data)  # the paper's OLS; 430 cities < 4500: sizes scale down
    assert res["probe"] == "ols" and res["alpha"] is None
    assert res["r2_x"] > 0.99 and res["r2_y"] > 0.99
    assert res["heldout_error"] < 20  # coordinates span 3600; noise maps to a few units
    assert res["atlantis_error"] < 20  # the map is the same linear one for Atlantis here
    # every city is used: 430 * 3250/4500 -> 310 train (+1 rounding), 430 * 1250/4500 -> 119
    assert (res["n_train"], res["n_heldout"], res["n_atlantis"]) == (311, 119, 30)
    assert (res["n_atlantis_train"], res["n_atlantis_baseline"]) == (391, 9)  # 400 real
    assert (res["layer"], res["task"]) == (3, "distance")
    splits = pd.DataFrame(res["predictions"])["split"].value_counts()
    assert splits["heldout"] == 119 and splits["atlantis"] == 30
    assert splits["atlantis_baseline"] == 9
    json.dumps(res, allow_nan=False)  # strict JSON
    ridge = fit_probes(data, probe="ridge_cv", alpha=1.0)
    assert ridge["r2_x"] > 0.99 and ridge["alpha"] == 1.0
    assert fit_probes(data, seed=42)["predictions"] == fit_probes(data)["predictions"]
    assert fit_probes(data, seed=2)["predictions"] != res["predictions"]
    with pytest.raises(ValueError, match="probe"):
        fit_probes(data, probe="lasso")


def test_atlantis_probe_error_hand_case():
    # Real cities: features = (x, y) exactly, so the Atlantis probe (fit on real cities only)
    # learns the identity map.
    rng = np.random.default_rng(0)
    real = rng.uniform(-100, 100, size=(50, 2))
    # Atlantis: city A at (0, 0) whose features claim (3, 4) -> error 5;
    #           city B at (10, 10) with honest features -> error 0; mean = 2.5.
    atl_xy = np.array([[0.0, 0.0], [10.0, 10.0]])
    atl_feats = np.array([[3.0, 4.0], [10.0, 10.0]])
    data = {
        "city_id": np.arange(1000, 1052),
        "x": np.r_[real[:, 0], atl_xy[:, 0]],
        "y": np.r_[real[:, 1], atl_xy[:, 1]],
        "is_atlantis": np.r_[np.zeros(50, bool), np.ones(2, bool)],
        "features": np.concatenate([real, atl_feats]),
    }
    res = fit_probes(data)
    assert res["atlantis_error"] == pytest.approx(2.5)
    assert res["atlantis_baseline_error"] == pytest.approx(0, abs=1e-8)
    # R^2 on Atlantis: x: ss_tot = 2 * 5^2 = 50, ss_res = 3^2 = 9 -> 1 - 9/50 = 0.82
    #                  y: ss_tot = 50, ss_res = 4^2 = 16 -> 1 - 16/50 = 0.68
    assert res["atlantis_r2_x"] == pytest.approx(0.82)
    assert res["atlantis_r2_y"] == pytest.approx(0.68)
    atl = [p for p in res["predictions"] if p["split"] == "atlantis"]
    a = next(p for p in atl if p["city_id"] == 1050)
    assert (a["x_hat"], a["y_hat"]) == pytest.approx((3.0, 4.0))
    # The main probe trains on Atlantis cities too (the paper's candidates include them), so
    # its map is pulled off the identity by city A.
    assert res["train_error"] > 1e-6


def test_scaled_sizes_rule():
    from ftlab.represent import scaled_sizes

    assert scaled_sizes(4660, (3250, 1250)) == (3250, 1250)  # enough cities: the paper's
    assert scaled_sizes(4500, (3250, 1250)) == (3250, 1250)
    assert scaled_sizes(450, (3250, 1250)) == (325, 125)  # 450 * 3250/4500, 450 * 1250/4500
    assert scaled_sizes(101, (4000, 100)) == (99, 2)  # 98 + 2 floors, remainder to train
    assert scaled_sizes(2, (4000, 100)) == (1, 1)  # every set keeps a city
    with pytest.raises(ValueError, match="at least 2"):
        scaled_sizes(1, (3250, 1250))


def _paper_sized(n_real=4560, n_atl=100, dim=256, seed=0):
    """Noisy, not exactly linear data of the paper's size (ids >= 1000 only)."""
    rng = np.random.default_rng(seed)
    xy = np.concatenate(
        [rng.uniform(-1800, 1800, size=(n_real, 2)), rng.normal([-350, 350], 30, (n_atl, 2))]
    )
    feats = np.tanh(xy @ rng.normal(size=(2, dim)) / 2000) + 0.05 * rng.normal(size=(len(xy), dim))
    order = rng.permutation(len(xy))  # Atlantis cities interleaved with real ones
    return {
        "city_id": np.arange(1000, 1000 + len(xy)),
        "x": xy[order, 0],
        "y": xy[order, 1],
        "is_atlantis": np.r_[np.zeros(n_real, bool), np.ones(n_atl, bool)][order],
        "features": feats[order].astype(np.float32),
    }


def _ols(X, Y, Xnew):
    """OLS with intercept by numpy least squares (independent of sklearn)."""
    A = np.c_[np.ones(len(X)), X]
    W = np.linalg.lstsq(A, Y, rcond=None)[0]
    return np.c_[np.ones(len(Xnew)), Xnew] @ W


def _r2_hand(y, y_hat):
    return 1 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def test_paper_probe_against_an_independent_computation():
    data = _paper_sized()
    X = data["features"].astype(np.float64)
    xy = np.c_[data["x"], data["y"]]
    atl = data["is_atlantis"]
    res = fit_probes(data)
    # Cities: pandas DataFrame.sample(n, random_state=42) is RandomState(42).choice without
    # replacement; the test cities come from the rest, in table order, the same way.
    n = len(X)
    train = np.random.RandomState(42).choice(n, 3250, replace=False)
    rest = np.setdiff1d(np.arange(n), train)  # sorted = table order
    test = rest[np.random.RandomState(42).choice(len(rest), 1250, replace=False)]
    assert (res["n_train"], res["n_heldout"]) == (3250, 1250)
    assert atl[train].sum() > 0 and res["n_heldout_atlantis"] == atl[test].sum() > 0
    pred = _ols(X[train], xy[train], X[test])
    assert res["r2_x"] == pytest.approx(_r2_hand(xy[test, 0], pred[:, 0]), rel=1e-6)
    assert res["r2_y"] == pytest.approx(_r2_hand(xy[test, 1], pred[:, 1]), rel=1e-6)
    err = np.sqrt(((xy[test] - pred) ** 2).sum(axis=1)).mean()
    assert res["heldout_error"] == pytest.approx(err, rel=1e-6)
    fit = _ols(X[train], xy[train], X[train])
    assert res["train_error"] == pytest.approx(
        np.sqrt(((xy[train] - fit) ** 2).sum(axis=1)).mean(), rel=1e-6
    )
    real = ~atl[test]  # the held-out score on real cities only
    assert res["n_heldout_real"] == real.sum() < len(test)
    assert res["heldout_real_r2_x"] == pytest.approx(_r2_hand(xy[test][real, 0], pred[real, 0]))
    assert res["heldout_real_r2_y"] == pytest.approx(_r2_hand(xy[test][real, 1], pred[real, 1]))
    err_real = np.sqrt(((xy[test][real] - pred[real]) ** 2).sum(axis=1)).mean()
    assert res["heldout_real_error"] == pytest.approx(err_real, rel=1e-6)
    held = [p["city_id"] for p in res["predictions"] if p["split"] == "heldout"]
    assert held == data["city_id"][test].tolist()
    # Atlantis probe: the paper's evaluate_probe_generalization.py on the 4500 probe cities
    # (train then test order): np.random.seed(42); permutation of the non-Atlantis positions;
    # 4000 train, the next 100 baseline; tested on the Atlantis cities among the 4500.
    sampled = np.r_[train, test]
    candidates = [i for i in range(len(sampled)) if not atl[sampled[i]]]
    np.random.seed(42)
    shuffled = np.random.permutation(candidates).tolist()
    g_train, g_base = sampled[shuffled[:4000]], sampled[shuffled[4000:4100]]
    g_test = sampled[atl[sampled]]
    assert (res["n_atlantis_train"], res["n_atlantis_baseline"]) == (4000, 100)
    assert res["n_atlantis"] == len(g_test) == atl[sampled].sum()
    pa = _ols(X[g_train], xy[g_train], X[g_test])
    pb = _ols(X[g_train], xy[g_train], X[g_base])
    assert res["atlantis_error"] == pytest.approx(
        np.sqrt(((xy[g_test] - pa) ** 2).sum(axis=1)).mean(), rel=1e-6
    )
    assert res["atlantis_baseline_error"] == pytest.approx(
        np.sqrt(((xy[g_base] - pb) ** 2).sum(axis=1)).mean(), rel=1e-6
    )
    base = [p["city_id"] for p in res["predictions"] if p["split"] == "atlantis_baseline"]
    assert base == data["city_id"][g_base].tolist()


# -- features from a tiny random model --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer()
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval(), tok


CITIES = pd.DataFrame(
    {
        "city_id": [5, 999, 1000, 1234, 9999, 4321],
        "name": list("abcdef"),
        "x": [1.0, 2, 3, 4, 5, -350],
        "y": [1.0, 2, 3, 4, 5, 350],
        "is_atlantis": [False, False, False, False, False, True],
    }
)


def _dist_prompt(city: str) -> str:
    return f"dist({city},"


def test_features_shapes_positions_and_filter(tiny):
    model, tok = tiny
    data = features_from_model(model, tok, CITIES, _dist_prompt, layer=1, batch_size=2)
    assert list(data["city_id"]) == [1000, 1234, 9999, 4321]  # leading-zero ids dropped
    assert data["features"].shape == (4, 32)
    assert list(data["is_atlantis"]) == [False, False, False, True]
    assert str(data["prompt_example"]) == "dist(c_1000,"
    # manual forward pass for c_1234: tokens <bos> d i s t ( c _ 1 2 3 4 ,
    ids = tok.encode("dist(c_1234,")
    assert tok.convert_ids_to_tokens(ids[-2:]) == ["4", ","]
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
    expected = torch.cat([hs[-2], hs[-1]]).numpy()
    np.testing.assert_allclose(data["features"][1], expected, rtol=1e-5, atol=1e-6)
    # layer 0 = the embeddings of the digit and the delimiter
    emb = features_from_model(model, tok, CITIES, _dist_prompt, layer=0)["features"][1]
    table = model.get_input_embeddings().weight.detach()
    np.testing.assert_allclose(emb, torch.cat([table[ids[-2]], table[ids[-1]]]).numpy())


def test_unequal_prompts_rejected(tiny):
    model, tok = tiny
    with pytest.raises(AssertionError):
        features_from_model(
            model, tok, CITIES, lambda c: ("xx" if c.endswith("4") else "") + f"{c},", 1
        )


def test_extract_features_loads_checkpoint(tiny, monkeypatch):
    pytest.importorskip("ftlab.world.tasks")
    model, tok = tiny
    # A stand-in ftlab.evaluate: this test checks the wiring (loader + task probe prompt),
    # not checkpoint loading, and must not depend on the evaluator's imports.
    fake = types.ModuleType("ftlab.evaluate")
    fake.load_checkpoint = lambda path, threads=1: (model, tok)
    monkeypatch.setitem(sys.modules, "ftlab.evaluate", fake)
    monkeypatch.setattr(ftlab, "evaluate", fake, raising=False)
    data = extract_features("ckpt", CITIES, "distance", layer=2)
    assert data["features"].shape == (4, 32)
    assert str(data["task"]) == "distance"
    assert str(data["prompt_example"]).endswith("c_1000,")


def test_write_and_read(tmp_path):
    data = _synthetic(n_real=10, n_atl=2)
    path = tmp_path / "r" / "features.npz"
    write_features(path, data)
    back = read_features(path)
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    np.testing.assert_array_equal(back["features"], data["features"])
    assert str(back["task"]) == "distance" and int(back["layer"]) == 3
    res = fit_probes(back, seed=0)
    write_json(tmp_path / "probe.json", {**res, "bad": float("nan")})
    doc = json.loads((tmp_path / "probe.json").read_text())
    assert doc["bad"] is None and doc["n_atlantis"] == 2


def test_ridge_cv_selects_alpha_on_training_cities():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1000, 1000, size=(120, 2))

    def data(feats):
        return {
            "features": feats,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "is_atlantis": np.zeros(120, bool),
            "city_id": np.arange(1000, 1120),
        }

    # Clean linear signal in 4 of 60 dims: almost no penalty is best.
    clean = np.concatenate([xy @ rng.normal(size=(2, 4)), rng.normal(size=(120, 56)) * 1e-3], 1)
    assert fit_probes(data(clean), probe="ridge_cv", alpha=[0.01, 1, 1000])["alpha"] == 0.01
    # Pure noise with more dims than fold rows: the strongest penalty (predict the mean) wins.
    noise = rng.normal(size=(120, 200))
    res = fit_probes(data(noise), probe="ridge_cv", alpha=[0.01, 1e6])
    assert res["alpha"] == 1e6 and res["atlantis_alpha"] == 1e6
    assert fit_probes(data(noise), probe="ridge_cv", alpha=[3.0])["alpha"] == 3.0
