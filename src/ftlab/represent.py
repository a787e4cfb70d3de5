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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ftlab.io import atomic_path, atomic_write_text

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
PROBES = ("ols", "ridge_cv")
PAPER_PROBE_SIZES = {"train": 3250, "test": 1250, "atlantis_train": 4000, "atlantis_baseline": 100}


def _r2(y: np.ndarray, y_hat: np.ndarray) -> float | None:
    from sklearn.metrics import r2_score

    if len(y) < 2 or float(np.ptp(y)) == 0:
        return None
    return float(r2_score(y, y_hat))


def _mean_dist(xy: np.ndarray, xy_hat: np.ndarray) -> float | None:
    return float(np.linalg.norm(xy - xy_hat, axis=1).mean()) if len(xy) else None


def _scalar(v):
    v = v.item() if hasattr(v, "item") else v
    return v.decode() if isinstance(v, bytes) else v


def scaled_sizes(available: int, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """`wanted` counts when `available` covers their sum; otherwise the same proportions scaled
    down to use every available city (each count >= 1, largest-first rounding, sum preserved).
    This is the rule for studies smaller than the paper's (e.g. 3250/1250 of 4500)."""
    total = sum(wanted)
    if available >= total:
        return tuple(wanted)
    if available < len(wanted):
        raise ValueError(f"probe needs at least {len(wanted)} cities, only {available} available")
    sizes = [max(1, int(available * w / total)) for w in wanted]
    sizes[0] += available - sum(sizes)  # the rounding remainder goes to the training set
    while sum(sizes) > available:
        sizes[int(np.argmax(sizes))] -= 1
    return tuple(sizes)


def paper_city_split(
    candidates: np.ndarray, n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's probe cities (analyze_representations_higher.py): ``n_train`` drawn from the
    candidates with pandas ``DataFrame.sample(n, random_state=seed)``, then ``n_test`` drawn the
    same way from the candidates left. Returns positions into `candidates` order."""
    frame = pd.DataFrame({"pos": np.arange(len(candidates))})
    train = frame.sample(n=n_train, random_state=seed)
    rest = frame[~frame["pos"].isin(train["pos"])]
    test = rest.sample(n=n_test, random_state=seed)
    return train["pos"].to_numpy(), test["pos"].to_numpy()


def _make_probe(probe: str, alpha, seed: int, n_train: int):
    """An unfitted sklearn regressor of [x, y] on the features."""
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe == "ols":  # the paper's method "linear": OLS with intercept on the raw features
        return LinearRegression()
    if probe == "ridge_cv":
        pipe = make_pipeline(StandardScaler(), Ridge())
        alphas = [float(a) for a in np.atleast_1d(alpha)]
        if len(alphas) == 1 or n_train < 4:
            return pipe.set_params(ridge__alpha=alphas[0])
        folds = KFold(n_splits=min(5, n_train), shuffle=True, random_state=seed)
        return GridSearchCV(
            pipe, {"ridge__alpha": alphas}, cv=folds, scoring="neg_mean_squared_error"
        )
    raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")


def _fit(probe: str, alpha, seed: int, X: np.ndarray, Y: np.ndarray):
    model = _make_probe(probe, alpha, seed, len(X)).fit(X, Y)
    if probe == "ols":
        chosen = None
    elif hasattr(model, "best_params_"):
        chosen = float(model.best_params_["ridge__alpha"])
    else:
        chosen = float(model.get_params()["ridge__alpha"])
    return model, chosen


def fit_probes(
    data: dict,
    probe: str = "ols",
    alpha=(0.1, 1, 10, 100, 1000),
    n_train: int = PAPER_PROBE_SIZES["train"],
    n_test: int = PAPER_PROBE_SIZES["test"],
    atlantis_n_train: int = PAPER_PROBE_SIZES["atlantis_train"],
    atlantis_n_baseline: int = PAPER_PROBE_SIZES["atlantis_baseline"],
    seed: int = 42,
) -> dict:
    """Linear probes of x and y from the features, as the paper fits them.

    Main probe (analyze_representations_higher.py): candidates are all cities of `data`
    (city_id >= 1000, Atlantis INCLUDED), in `data` order; `n_train` cities are drawn with
    pandas sample(random_state=seed), then `n_test` of the rest the same way. One regressor of
    [x, y] is fit on the train cities; r2_x, r2_y (sklearn r2_score) and heldout_error (mean
    Euclidean error) are measured on the test cities, train_error on the train cities.

    Atlantis generalization probe (evaluate_probe_generalization.py): a SEPARATE fit on
    `atlantis_n_train` non-Atlantis cities of the main probe's train + test cities (in that
    order), the first of np.random.seed(seed); np.random.permutation(positions); the next
    `atlantis_n_baseline` non-Atlantis cities of that permutation give atlantis_baseline_error;
    the Atlantis cities among the main probe's cities give atlantis_error (and, with >= 2
    cities, atlantis_r2_x / atlantis_r2_y).

    `probe`: "ols" (the paper: sklearn LinearRegression on the raw features) or "ridge_cv"
    (ftlab option: standardized features, sklearn Ridge with `alpha` chosen from the candidates
    by 5-fold CV on the training cities only; reported as "alpha").
    Sizes larger than the available cities are scaled down in proportion (scaled_sizes), so
    small studies use every city. Undefined numbers are None so the result is strict JSON.
    """
    feats = np.asarray(data["features"], dtype=np.float64)
    xy = np.stack([np.asarray(data["x"], float), np.asarray(data["y"], float)], axis=1)
    atl = np.asarray(data["is_atlantis"], dtype=bool)
    city_id = np.asarray(data["city_id"], dtype=np.int64)

    n_tr, n_te = scaled_sizes(len(feats), (n_train, n_test))
    train_idx, test_idx = paper_city_split(np.arange(len(feats)), n_tr, n_te, seed)
    main, alpha_main = _fit(probe, alpha, seed, feats[train_idx], xy[train_idx])
    pred_train, pred_test = main.predict(feats[train_idx]), main.predict(feats[test_idx])

    # The paper's probe-generalization set: the cities of the main probe, in its order.
    sampled = np.concatenate([train_idx, test_idx])
    non_atl = np.flatnonzero(~atl[sampled])  # positions into `sampled`
    atl_idx = sampled[atl[sampled]]
    n_atr, n_abl = scaled_sizes(len(non_atl), (atlantis_n_train, atlantis_n_baseline))
    # The paper: np.random.seed(seed); np.random.permutation(...) -- the same MT19937 stream.
    shuffled = np.random.RandomState(seed).permutation(non_atl)
    gen_train = sampled[shuffled[:n_atr]]
    gen_base = sampled[shuffled[n_atr : n_atr + n_abl]]
    gen, alpha_gen = _fit(probe, alpha, seed, feats[gen_train], xy[gen_train])
    pred_base = gen.predict(feats[gen_base])
    pred_atl = gen.predict(feats[atl_idx]) if len(atl_idx) else np.zeros((0, 2))

    predictions = []
    splits = (
        ("heldout", test_idx, pred_test),
        ("atlantis", atl_idx, pred_atl),
        ("atlantis_baseline", gen_base, pred_base),
    )
    for split, idx, pred in splits:
        for i, (xh, yh) in zip(idx, pred, strict=True):
            predictions.append(
                {
                    "city_id": int(city_id[i]),
                    "x": float(xy[i, 0]),
                    "y": float(xy[i, 1]),
                    "x_hat": float(xh),
                    "y_hat": float(yh),
                    "is_atlantis": bool(atl[i]),
                    "split": split,
                }
            )
    many_atl = len(atl_idx) >= 2
    # ftlab addition: the held-out score on real cities only (the paper's held-out cities
    # include Atlantis, a few percent of them at paper scale but up to a fifth in small studies).
    real = ~atl[test_idx]
    many_real = real.sum() >= 2
    return {
        "task": _scalar(data.get("task")) if "task" in data else None,
        "layer": int(_scalar(data["layer"])) if "layer" in data else None,
        "probe": probe,
        "alpha": alpha_main,
        "atlantis_alpha": alpha_gen,
        "seed": int(seed),
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(test_idx)),
        "n_heldout_atlantis": int(atl[test_idx].sum()),
        "n_atlantis_train": int(len(gen_train)),
        "n_atlantis_baseline": int(len(gen_base)),
        "n_atlantis": int(len(atl_idx)),
        "r2_x": _r2(xy[test_idx, 0], pred_test[:, 0]),
        "r2_y": _r2(xy[test_idx, 1], pred_test[:, 1]),
        "heldout_error": _mean_dist(xy[test_idx], pred_test),
        "heldout_real_r2_x": _r2(xy[test_idx][real, 0], pred_test[real, 0]) if many_real else None,
        "heldout_real_r2_y": _r2(xy[test_idx][real, 1], pred_test[real, 1]) if many_real else None,
        "heldout_real_error": _mean_dist(xy[test_idx][real], pred_test[real]),
        "n_heldout_real": int(real.sum()),
        "train_error": _mean_dist(xy[train_idx], pred_train),
        "atlantis_error": _mean_dist(xy[atl_idx], pred_atl),
        "atlantis_baseline_error": _mean_dist(xy[gen_base], pred_base),
        "atlantis_r2_x": _r2(xy[atl_idx, 0], pred_atl[:, 0]) if many_atl else None,
        "atlantis_r2_y": _r2(xy[atl_idx, 1], pred_atl[:, 1]) if many_atl else None,
        "predictions": predictions,
    }


# -- files ----------------------------------------------------------------------------------
def write_features(path: str | Path, data: dict) -> None:
    """Write `data` (arrays and scalars) as an .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # a file object: np.savez would append .npz to a name
        np.savez(fh, **{k: np.asarray(v) for k, v in data.items()})


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
