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
    res = fit_probes(data, alpha=0.0, test_fraction=0.25, seed=1)
    assert res["r2_x"] > 0.99 and res["r2_y"] > 0.99
    assert res["heldout_error"] < 20  # coordinates span 3600; noise maps to a few units
    assert res["atlantis_error"] < 20  # the map is the same linear one for Atlantis here
    assert (res["n_train"], res["n_heldout"], res["n_atlantis"]) == (300, 100, 30)
    assert (res["layer"], res["task"], res["alpha"]) == (3, "distance", 0.0)
    splits = pd.DataFrame(res["predictions"])["split"].value_counts()
    assert splits["heldout"] == 100 and splits["atlantis"] == 30
    json.dumps(res, allow_nan=False)  # strict JSON
    # ridge also works and the split is seeded
    ridge = fit_probes(data, alpha=1.0, test_fraction=0.25, seed=1)
    assert ridge["r2_x"] > 0.99
    assert fit_probes(data, 1.0, 0.25, seed=1)["predictions"] == ridge["predictions"]
    assert fit_probes(data, 1.0, 0.25, seed=2)["predictions"] != ridge["predictions"]


def test_atlantis_probe_error_hand_case():
    # Real cities: features = (x, y) exactly, so OLS learns the identity map.
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
    res = fit_probes(data, alpha=0.0, test_fraction=0.2, seed=0)
    assert res["heldout_error"] == pytest.approx(0, abs=1e-8)
    assert res["atlantis_error"] == pytest.approx(2.5)
    # R^2 on Atlantis: x: ss_tot = 2 * 5^2 = 50, ss_res = 3^2 = 9 -> 1 - 9/50 = 0.82
    #                  y: ss_tot = 50, ss_res = 4^2 = 16 -> 1 - 16/50 = 0.68
    assert res["atlantis_r2_x"] == pytest.approx(0.82)
    assert res["atlantis_r2_y"] == pytest.approx(0.68)
    atl = [p for p in res["predictions"] if p["split"] == "atlantis"]
    assert atl[0]["city_id"] == 1050 and atl[0]["x_hat"] == pytest.approx(3.0)


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
    res = fit_probes(back, alpha=1.0, test_fraction=0.3, seed=0)
    write_json(tmp_path / "probe.json", {**res, "bad": float("nan")})
    doc = json.loads((tmp_path / "probe.json").read_text())
    assert doc["bad"] is None and doc["n_atlantis"] == 2


def test_alpha_selection_by_cross_validation():
    from ftlab.represent import select_alpha

    rng = np.random.default_rng(0)
    xy = rng.uniform(-1000, 1000, size=(80, 2))
    # Clean linear signal in 4 of 60 dims: almost no penalty is best.
    clean = np.concatenate([xy @ rng.normal(size=(2, 4)), rng.normal(size=(80, 56)) * 1e-3], 1)
    assert select_alpha(clean, xy, [0.01, 1, 1000], seed=0) == 0.01
    # Pure noise with more dims than fold rows: the strongest penalty (predict the mean) wins.
    noise = rng.normal(size=(80, 120))
    assert select_alpha(noise, xy, [0.01, 1, 1e6], seed=0) == 1e6
    # A single candidate is used as is; the chosen value is reported by fit_probes.
    assert select_alpha(noise, xy, [3.0], seed=0) == 3.0
    data = {
        "features": noise,
        "x": xy[:, 0],
        "y": xy[:, 1],
        "is_atlantis": np.zeros(80, bool),
        "city_id": np.arange(1000, 1080),
    }
    assert fit_probes(data, alpha=[0.01, 1e6], test_fraction=0.25, seed=0)["alpha"] == 1e6
