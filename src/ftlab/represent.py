"""Representations (design doc, "Representations"): per-city hidden-state features and linear
probes of the world coordinates.

Prompt per city: the task prefix + the city id + the task's first delimiter, e.g.
`<bos>dist(c_1234,`. Feature = hidden_states[layer] (0 = embeddings) at the last id digit and at
the delimiter, concatenated. Only ids without a leading zero (city_id >= 1000) are used:
leading-zero ids cluster apart in representation space.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ftlab.io import atomic_write_text
from ftlab.paths import atomic_target

MIN_CITY_ID = 1000  # smallest id written without a leading zero (c_1000)


def _format_city_id(i: int) -> str:
    try:
        from ftlab.world.cities import format_city_id
    except ImportError:  # keep this module usable while the world package is being written
        return f"c_{int(i):04d}"
    return format_city_id(int(i))


def _encode(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text)
    return [int(t) for t in (ids.tolist() if hasattr(ids, "tolist") else ids)]


@torch.no_grad()
def features_from_model(
    model,
    tokenizer,
    cities: pd.DataFrame,
    prompt_fn: Callable[[str], str],
    layer: int,
    batch_size: int = 256,
) -> dict:
    """Features of every city with city_id >= 1000 (see module docstring).

    `prompt_fn(city_str)` builds the prompt without <bos> (the tokenizer adds it). The last
    two tokens are the last id digit and the delimiter: this holds for a char-level tokenizer
    and prompts ending in `<id><delimiter>`, which is asserted.
    """
    kept = cities[cities["city_id"].astype(int) >= MIN_CITY_ID].reset_index(drop=True)
    prompts = []
    for cid in kept["city_id"]:
        city = _format_city_id(cid)
        prompt = prompt_fn(city)
        assert prompt[:-1].endswith(city), f"prompt {prompt!r} must end with {city!r} + delimiter"
        prompts.append(prompt)
    ids = [_encode(tokenizer, p) for p in prompts]
    lengths = {len(x) for x in ids}
    # Equal-length ids (4 digits) -> equal-length prompts: batches need no padding or mask.
    assert len(lengths) <= 1, f"probe prompts differ in token length: {sorted(lengths)}"
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(ids), batch_size):
        batch = torch.tensor(ids[start : start + batch_size], dtype=torch.long, device=device)
        out = model(input_ids=batch, output_hidden_states=True)
        hidden = out.hidden_states[layer]  # [B, T, H]
        feats = torch.cat([hidden[:, -2, :], hidden[:, -1, :]], dim=-1)  # digit, delimiter
        chunks.append(feats.float().cpu().numpy())
    width = 2 * model.config.hidden_size
    features = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.float32)
    return {
        "city_id": kept["city_id"].to_numpy(dtype=np.int64),
        "x": kept["x"].to_numpy(dtype=np.float64),
        "y": kept["y"].to_numpy(dtype=np.float64),
        "is_atlantis": kept["is_atlantis"].to_numpy(dtype=bool),
        "features": features.astype(np.float32),
        "layer": np.int64(layer),
        "prompt_example": np.str_(prompts[0] if prompts else ""),
    }


def extract_features(
    checkpoint: str,
    cities: pd.DataFrame,
    task: str,
    layer: int,
    threads: int = 1,
    batch_size: int = 256,
    device: str | None = None,
) -> dict:
    """Load `checkpoint` and compute the probe features of `cities` prompted with `task`'s
    probe prompt. Returns arrays city_id, x, y, is_atlantis, features [n, 2*hidden] and the
    scalars layer, task, prompt_example. device: auto | cpu | cuda (None: the loader's
    default, auto); features are float32 on every device."""
    from ftlab import evaluate  # attribute lookup at call time: tests substitute the loader
    from ftlab.world.tasks import get_task

    torch.set_num_threads(threads)
    where = {} if device is None else {"device": device}
    model, tokenizer = evaluate.load_checkpoint(checkpoint, threads=threads, **where)
    data = features_from_model(
        model, tokenizer, cities, get_task(task).probe_prompt, layer, batch_size
    )
    data["task"] = np.str_(task)
    return data


# -- probes ---------------------------------------------------------------------------------
def _ridge(X: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights W minimizing |XW - Y|^2 + alpha |W|^2 (alpha 0: minimum-norm OLS).
    X and Y are centred by the caller, so no intercept term is needed here."""
    if alpha == 0:
        return np.linalg.lstsq(X, Y, rcond=None)[0]
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ Y)


def _r2(y: np.ndarray, y_hat: np.ndarray) -> float | None:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if len(y) < 2 or ss_tot == 0:
        return None
    return 1.0 - float(((y - y_hat) ** 2).sum()) / ss_tot


def _mean_dist(xy: np.ndarray, xy_hat: np.ndarray) -> float | None:
    return float(np.linalg.norm(xy - xy_hat, axis=1).mean()) if len(xy) else None


def _scalar(v):
    v = v.item() if hasattr(v, "item") else v
    return v.decode() if isinstance(v, bytes) else v


def select_alpha(X: np.ndarray, Y: np.ndarray, alphas, seed: int, folds: int = 5) -> float:
    """The ridge penalty with the lowest k-fold mean Euclidean error on (X, Y) — the probe's
    TRAINING cities only, so the held-out and Atlantis scores stay untouched. Features are
    standardized inside each fold with that fold's training statistics."""
    alphas = [float(a) for a in alphas]
    if len(alphas) == 1:
        return alphas[0]
    order = np.random.default_rng(seed).permutation(len(X))
    chunks = np.array_split(order, min(folds, len(X)))
    errors = []
    for a in alphas:
        err = []
        for k, val in enumerate(chunks):
            fit = np.concatenate([c for j, c in enumerate(chunks) if j != k])
            mu, sd = X[fit].mean(axis=0), X[fit].std(axis=0)
            sd[sd == 0] = 1.0
            y_mu = Y[fit].mean(axis=0)
            W = _ridge((X[fit] - mu) / sd, Y[fit] - y_mu, a)
            err.append(np.linalg.norm((X[val] - mu) / sd @ W + y_mu - Y[val], axis=1).mean())
        errors.append(float(np.mean(err)))
    return alphas[int(np.argmin(errors))]


def fit_probes(data: dict, alpha, test_fraction: float, seed: int) -> dict:
    """Linear probes for x and y trained on a seeded random subset of the real cities.

    `alpha` is the ridge penalty, or a list of candidates chosen by cross-validation on the
    training cities (see select_alpha); the chosen value is reported as "alpha".

    Held-out real cities give r2_x, r2_y and heldout_error (mean Euclidean error); the same
    real-trained probe applied to the Atlantis cities gives atlantis_error and, with >= 2
    cities, atlantis_r2_x / atlantis_r2_y. Features are standardized with train statistics
    only. Undefined numbers are None so the result is strict JSON.
    """
    feats = np.asarray(data["features"], dtype=np.float64)
    xy = np.stack([np.asarray(data["x"], float), np.asarray(data["y"], float)], axis=1)
    atl = np.asarray(data["is_atlantis"], dtype=bool)
    city_id = np.asarray(data["city_id"], dtype=np.int64)
    real_idx = np.flatnonzero(~atl)
    atl_idx = np.flatnonzero(atl)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(real_idx)
    n_test = min(len(perm) - 1, max(1, int(round(test_fraction * len(perm)))))
    if n_test < 1:
        raise ValueError(f"need at least 2 real cities to fit and test a probe, got {len(perm)}")
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])

    mu = feats[train_idx].mean(axis=0)
    sd = feats[train_idx].std(axis=0)
    sd[sd == 0] = 1.0  # constant feature: leave it centred at zero instead of dividing by 0
    alpha = select_alpha(feats[train_idx], xy[train_idx], np.atleast_1d(alpha), seed)
    target_mu = xy[train_idx].mean(axis=0)
    W = _ridge((feats[train_idx] - mu) / sd, xy[train_idx] - target_mu, alpha)

    def predict(idx: np.ndarray) -> np.ndarray:
        return ((feats[idx] - mu) / sd) @ W + target_mu

    pred_test, pred_atl, pred_train = predict(test_idx), predict(atl_idx), predict(train_idx)
    predictions = []
    for split, idx, pred in (("heldout", test_idx, pred_test), ("atlantis", atl_idx, pred_atl)):
        for i, (xh, yh) in zip(idx, pred, strict=True):
            predictions.append(
                {
                    "city_id": int(city_id[i]),
                    "x": float(xy[i, 0]),
                    "y": float(xy[i, 1]),
                    "x_hat": float(xh),
                    "y_hat": float(yh),
                    "split": split,
                }
            )
    many_atl = len(atl_idx) >= 2
    return {
        "task": _scalar(data.get("task")) if "task" in data else None,
        "layer": int(_scalar(data["layer"])) if "layer" in data else None,
        "alpha": float(alpha),
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(test_idx)),
        "n_atlantis": int(len(atl_idx)),
        "r2_x": _r2(xy[test_idx, 0], pred_test[:, 0]),
        "r2_y": _r2(xy[test_idx, 1], pred_test[:, 1]),
        "heldout_error": _mean_dist(xy[test_idx], pred_test),
        "train_error": _mean_dist(xy[train_idx], pred_train),
        "atlantis_error": _mean_dist(xy[atl_idx], pred_atl),
        "atlantis_r2_x": _r2(xy[atl_idx, 0], pred_atl[:, 0]) if many_atl else None,
        "atlantis_r2_y": _r2(xy[atl_idx, 1], pred_atl[:, 1]) if many_atl else None,
        "predictions": predictions,
    }


# -- files ----------------------------------------------------------------------------------
def write_features(path: str | Path, data: dict) -> None:
    """Write `data` (arrays and scalars) as an .npz, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
        np.savez(fh, **{k: np.asarray(v) for k, v in data.items()})
    os.replace(tmp, path)


def read_features(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: dict) -> None:
    """Write `obj` as strict JSON (NaN/inf -> null), atomically."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=1, allow_nan=False) + "\n")
