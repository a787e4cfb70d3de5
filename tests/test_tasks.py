"""Task rows checked against independent recomputations from the city table."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import ConvexHull, Delaunay, QhullError

from ftlab.study import TASKS as STUDY_TASKS
from ftlab.world.cities import build_city_table
from ftlab.world.tasks import (
    TASKS,
    CityPool,
    SamplingError,
    get_task,
    hull_has_area,
    point_in_convex_hull,
    sample_crossing_balanced,
    segments_cross_paper,
    segments_intersect,
    split_prompt,
    task_of_row,
)

ID = r"c_\d{4}"
FORMATS = {
    "distance": rf"dist\(({ID}),({ID})\)=(0|[1-9]\d*)",
    "trianglearea": rf"triarea\(({ID}),({ID}),({ID})\)=(0|[1-9]\d*)",
    "angle": rf"angle\(({ID}),({ID}),({ID})\)=(0|[1-9]\d*)",
    "compass": rf"compass\(({ID}),({ID})\)=(N|NE|E|SE|S|SW|W|NW)",
    "inside": rf"inside\(({ID});({ID}(?:,{ID}){{2,4}})\)=(TRUE|FALSE)",
    "perimeter": rf"perimeter\(({ID}(?:,{ID}){{1,4}})\)=(0|[1-9]\d*)",
    "crossing": rf"cross\(({ID}),({ID});({ID}),({ID})\)=(TRUE|FALSE)",
}
N_ROWS = 600


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_city_table(100_000, 300, 100, (-350.0, 350.0), 30.0, seed=7)


@pytest.fixture(scope="module")
def pool(table) -> CityPool:
    return CityPool.from_frame(table)


@pytest.fixture(scope="module")
def lookup(table) -> dict[str, tuple[int, int, bool]]:
    return {
        f"c_{int(r.city_id):04d}": (int(r.x), int(r.y), bool(r.is_atlantis))
        for r in table.itertuples()
    }


@pytest.fixture(scope="module")
def rows(pool) -> dict[tuple[str, bool], list[str]]:
    out = {}
    for i, (name, task) in enumerate(TASKS.items()):
        for req in (False, True):
            rng = np.random.default_rng([i, req])
            out[name, req] = task.sample_batch(rng, pool, req, N_ROWS)
    return out


def cities_of(row: str) -> list[str]:
    return re.findall(ID, row)


def xy(lookup, city):
    return lookup[city][:2]


def near_half(v: float) -> bool:
    """Float results this close to .5 may round either way between two methods."""
    return abs(v - math.floor(v) - 0.5) < 1e-6


def check_rounded(answer: str, value: float) -> None:
    if not near_half(value):
        assert int(answer) == round(value), (answer, value)


# -- independent geometry -----------------------------------------------------------------------
def cross2(o, a, b) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def compass_independent(a, b) -> str:
    deg = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
    if -22.5 <= deg < 22.5:
        return "E"
    if 22.5 <= deg < 67.5:
        return "NE"
    if 67.5 <= deg < 112.5:
        return "N"
    if 112.5 <= deg < 157.5:
        return "NW"
    if deg >= 157.5 or deg < -157.5:
        return "W"
    if -157.5 <= deg < -112.5:
        return "SW"
    if -112.5 <= deg < -67.5:
        return "S"
    return "SE"


def angle_paper(x1, y1, x2, y2, x3, y3):
    """The paper's calculate_angle, re-typed from src/data_generation_v1/tasks/angle.py."""
    v1_x, v1_y, v2_x, v2_y = x1 - x2, y1 - y2, x3 - x2, y3 - y2
    dot_product = v1_x * v2_x + v1_y * v2_y
    mag1 = np.sqrt(v1_x**2 + v1_y**2)
    mag2 = np.sqrt(v2_x**2 + v2_y**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_angle = np.clip(dot_product / (mag1 * mag2), -1.0, 1.0)
        angle_deg = np.degrees(np.arccos(cos_angle))
    return np.where(np.isnan(angle_deg), 0, angle_deg)


def compass_paper(x1, y1, x2, y2):
    """The paper's calculate_compass_direction (src/data_generation_v1/tasks/compass.py)."""
    dx, dy = x2 - x1, y2 - y1
    if abs(dx) < 1e-10 and abs(dy) < 1e-10:
        return "N"
    angle_deg = np.degrees(np.arctan2(dy, dx))
    if angle_deg < 0:
        angle_deg += 360
    sector = int(((angle_deg + 22.5) % 360) / 45)
    return ["E", "NE", "N", "NW", "W", "SW", "S", "SE"][sector]


def crossing_paper(p1, p2, p3, p4) -> bool:
    """The paper's segments_intersect, re-typed from cfpark00/world-map-representation
    src/data_generation_v1/tasks/crossing.py (strict ccw: collinear counts as clockwise)."""
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = p1, p2, p3, p4

    def ccw(ax, ay, bx, by, cx, cy):
        return (cy - ay) * (bx - ax) > (by - ay) * (cx - ax)

    return (ccw(x1, y1, x3, y3, x4, y4) != ccw(x2, y2, x3, y3, x4, y4)) and (
        ccw(x1, y1, x2, y2, x3, y3) != ccw(x1, y1, x2, y2, x4, y4)
    )


def crossing_closed_independent(p1, p2, p3, p4) -> bool:
    """The closed segments share a point (option crossing_rule: closed): parametric
    intersection in exact fractions; collinear cases by interval overlap."""
    d1 = (p2[0] - p1[0], p2[1] - p1[1])
    d2 = (p4[0] - p3[0], p4[1] - p3[1])
    w = (p3[0] - p1[0], p3[1] - p1[1])
    denom = d1[0] * d2[1] - d1[1] * d2[0]
    if denom != 0:
        t = Fraction(w[0] * d2[1] - w[1] * d2[0], denom)
        u = Fraction(w[0] * d1[1] - w[1] * d1[0], denom)
        return 0 <= t <= 1 and 0 <= u <= 1
    collinear = all(cross2(p1, p2, q) == 0 for q in (p3, p4)) and all(
        cross2(p3, p4, q) == 0 for q in (p1, p2)
    )
    if not collinear:
        return False
    return all(
        max(min(p1[i], p2[i]), min(p3[i], p4[i])) <= min(max(p1[i], p2[i]), max(p3[i], p4[i]))
        for i in (0, 1)
    )


def inside_paper(t, pts) -> bool:
    """The paper's point_in_convex_hull (data_generation_v1/tasks/inside.py), re-implemented:
    collinear 3-point hull -> False; qhull error (degenerate hull) -> False; else Delaunay of
    the hull vertices, find_simplex >= 0."""
    hull_points = np.array(pts, dtype=float)
    if len(hull_points) == 3:
        p1, p2, p3 = hull_points
        if abs((p2[0] - p1[0]) * (p3[1] - p1[1]) - (p2[1] - p1[1]) * (p3[0] - p1[0])) < 1e-10:
            return False
    try:
        hull = ConvexHull(hull_points)
        delaunay = Delaunay(hull_points[hull.vertices])
    except QhullError:
        return False
    return bool(delaunay.find_simplex(np.array(t, dtype=float)) >= 0)


def simulate_paper_inside(xs, ys, n_samples, seed) -> list[tuple[int, bool]]:
    """The paper's generate_inside_samples loop (all_pairs strategy), one attempt at a time
    with the legacy global-state RNG: (hull size, label) of every kept sample."""
    rs = np.random.RandomState(seed)
    n_true = int(n_samples * 0.5)
    n_false = n_samples - n_true
    true_s, false_s = [], []
    attempts = 0
    while (len(true_s) < n_true or len(false_s) < n_false) and attempts < n_samples * 100:
        attempts += 1
        n_hull = rs.randint(3, 5 + 1)
        idx = rs.choice(len(xs), size=n_hull + 1, replace=False)
        pts = [(xs[i], ys[i]) for i in idx]
        inside = inside_paper(pts[0], pts[1:])
        if inside and len(true_s) < n_true:
            true_s.append((n_hull, True))
        elif not inside and len(false_s) < n_false:
            false_s.append((n_hull, False))
    return true_s + false_s


def inside_independent(t, pts) -> bool | None:
    """scipy's Delaunay triangulation of the hull points; None if qhull rejects them."""
    try:
        tri = Delaunay(np.array(pts, dtype=float))
    except QhullError:
        return None
    return bool(tri.find_simplex(np.array([t], dtype=float), tol=1e-9)[0] >= 0)


# -- format and cities --------------------------------------------------------------------------
def test_registry_order_and_fields():
    assert tuple(TASKS) == STUDY_TASKS
    expected = {
        "distance": ("dist", "mae", math.hypot(3600, 1800), ","),
        "trianglearea": ("triarea", "mae", 3240000, ","),
        "angle": ("angle", "mae", 180, ","),
        "compass": ("compass", "accuracy", None, ","),
        "inside": ("inside", "accuracy", None, ";"),
        "perimeter": ("perimeter", "mae", 20000, ","),
        "crossing": ("cross", "accuracy", None, ","),
    }
    for name, (prefix, metric, fail, delim) in expected.items():
        t = get_task(name)
        assert (t.name, t.prefix, t.metric, t.fail_value, t.first_delimiter) == (
            name,
            prefix,
            metric,
            fail,
            delim,
        )


@pytest.mark.parametrize("name", STUDY_TASKS)
@pytest.mark.parametrize("req", [False, True])
def test_row_format_and_atlantis(rows, lookup, name, req):
    for row in rows[name, req]:
        assert re.fullmatch(FORMATS[name], row), row
        ids = cities_of(row)
        assert len(set(ids)) == len(ids), f"repeated city in {row}"
        n_atl = sum(lookup[c][2] for c in ids)
        assert (n_atl >= 1) if req else (n_atl == 0), row
        assert task_of_row(row) is TASKS[name]


def test_row_sizes_are_uniform(rows, pool):
    inside = [len(cities_of(r)) - 1 for r in rows["inside", False]]
    perim = [len(cities_of(r)) for r in rows["perimeter", False]]
    assert set(inside) == {3, 4, 5} and set(perim) == {2, 3, 4, 5}
    # inside's hull size is only uniform with the "stratified" option (the paper's is not).
    strat = get_task("inside").sample_batch(
        np.random.default_rng(4), pool, False, N_ROWS, inside_sampler="stratified"
    )
    strat = [len(cities_of(r)) - 1 for r in strat]
    for counts in (np.bincount(strat)[3:], np.bincount(perim)[2:]):
        assert counts.min() > 0.6 * counts.mean()


def test_atlantis_position_is_uniform(rows, lookup):
    # triarea: P(Atlantis at a position) = 1/3 + 2/3 * 100/400 = 0.5 for each of the 3 positions
    at = np.array([[lookup[c][2] for c in cities_of(r)] for r in rows["trianglearea", True]])
    assert np.all(np.abs(at.mean(axis=0) - 0.5) < 0.08), at.mean(axis=0)
    assert (at.sum(axis=1) >= 2).any()  # the other positions may hold Atlantis cities too


def test_city_ids(table):
    ids = table["city_id"].to_numpy()
    assert len(set(ids.tolist())) == len(ids)
    assert ids.min() >= 0 and ids.max() <= 9999


# -- answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("req", [False, True])
def test_distance(rows, lookup, req):
    for row in rows["distance", req]:
        a, b = (xy(lookup, c) for c in cities_of(row))
        check_rounded(split_prompt(row)[1], math.dist(a, b))


@pytest.mark.parametrize("req", [False, True])
def test_trianglearea(rows, lookup, req):
    for row in rows["trianglearea", req]:
        a, b, c = (np.array(xy(lookup, k), dtype=np.int64) for k in cities_of(row))
        z = np.cross(np.append(b - a, 0), np.append(c - a, 0))[2]  # 3-D cross product, z part
        area = Fraction(int(abs(z)), 2)  # exact; round() of a Fraction
        assert int(split_prompt(row)[1]) == round(area), row


@pytest.mark.parametrize("req", [False, True])
def test_angle_at_middle_city(rows, lookup, req):
    differs = 0
    for row in rows["angle", req]:
        a, b, c = (xy(lookup, k) for k in cities_of(row))
        ab, bc, ac = math.dist(a, b), math.dist(b, c), math.dist(a, c)
        if ab == 0 or bc == 0:  # cities sharing coordinates: the paper's 0
            assert split_prompt(row)[1] == "0", row
            continue
        cos_b = max(-1.0, min(1.0, (ab**2 + bc**2 - ac**2) / (2 * ab * bc)))  # law of cosines
        ans = split_prompt(row)[1]
        check_rounded(ans, math.degrees(math.acos(cos_b)))
        assert 0 <= int(ans) <= 180
        if ac > 0:
            cos_a = max(-1.0, min(1.0, (ab**2 + ac**2 - bc**2) / (2 * ab * ac)))
            differs += round(math.degrees(math.acos(cos_a))) != int(ans)
    assert differs > len(rows["angle", req]) / 2  # the angle at A would be a different answer


def test_angle_hand_made():
    # Right angle at city 1 (0, 0); 45 degrees at cities 2 and 3.
    df = pd.DataFrame(
        {
            "city_id": [1, 2, 3],
            "name": list("abc"),
            "x": [0, 100, 0],
            "y": [0, 0, 100],
            "is_atlantis": False,
        }
    )
    task = get_task("angle")
    for row in task.sample_batch(np.random.default_rng(0), CityPool.from_frame(df), False, 50):
        middle = cities_of(row)[1]
        assert task.answer_of(row) == ("90" if middle == "c_0001" else "45"), row


@pytest.mark.parametrize("req", [False, True])
def test_compass(rows, lookup, req):
    for row in rows["compass", req]:
        a, b = (xy(lookup, c) for c in cities_of(row))
        want = "N" if a == b else compass_independent(a, b)  # the paper's N for one point
        assert split_prompt(row)[1] == want, row


def test_compass_hand_made():
    # Direction FROM the first city TO the second, y = north.
    df = pd.DataFrame(
        {
            "city_id": [10, 11, 12, 13],
            "name": list("oNEs"),
            "x": [0, 0, 50, 3],
            "y": [0, 50, 48, -60],
            "is_atlantis": False,
        }
    )
    expected = {
        ("c_0010", "c_0011"): "N",
        ("c_0011", "c_0010"): "S",
        ("c_0010", "c_0012"): "NE",
        ("c_0010", "c_0013"): "S",
        ("c_0012", "c_0011"): "W",
    }
    task = get_task("compass")
    seen = set()
    for row in task.sample_batch(np.random.default_rng(1), CityPool.from_frame(df), False, 300):
        pair = tuple(cities_of(row))
        if pair in expected:
            assert task.answer_of(row) == expected[pair], row
            seen.add(pair)
    assert seen == set(expected)


@pytest.mark.parametrize("req", [False, True])
def test_inside(rows, lookup, req):
    for row in rows["inside", req]:
        t, *pts = (xy(lookup, c) for c in cities_of(row))
        truth = inside_paper(t, pts)
        assert split_prompt(row)[1] == ("TRUE" if truth else "FALSE"), row


@pytest.mark.parametrize("req", [False, True])
def test_inside_quotas_are_exact(pool, req):
    # The paper fills int(n * 0.5) TRUE and n - int(n * 0.5) FALSE rows exactly.
    for n in (4000, 1001):
        rows = get_task("inside").sample_batch(np.random.default_rng(11), pool, req, n)
        assert sum(r.endswith("=TRUE") for r in rows) == n // 2
    strat = get_task("inside").sample_batch(
        np.random.default_rng(11), pool, req, 4000, inside_sampler="stratified"
    )
    assert abs(sum(r.endswith("=TRUE") for r in strat) - 2000) < 4 * math.sqrt(4000 * 0.25)


def _size_by_label(pairs) -> dict[bool, np.ndarray]:
    """P(hull size = 3, 4, 5 | label) and the label counts."""
    out = {}
    for label in (True, False):
        sizes = np.array([k for k, lab in pairs if lab == label])
        out[label] = (np.bincount(sizes, minlength=6)[3:] / len(sizes), len(sizes))
    return out


def test_inside_hull_size_by_label_matches_a_simulation_of_the_paper(table, pool):
    """Hull size correlates with the label as in the paper: the distribution of n within TRUE
    and within FALSE rows matches the paper's loop re-run independently (scipy geometry,
    legacy RNG, one attempt at a time) on the same real cities."""
    real = table[~table["is_atlantis"]]
    sim = _size_by_label(
        simulate_paper_inside(real["x"].tolist(), real["y"].tolist(), 6000, seed=42)
    )
    rows = get_task("inside").sample_batch(np.random.default_rng(3), pool, False, 20000)
    ours = _size_by_label([(len(cities_of(r)) - 1, r.endswith("=TRUE")) for r in rows])
    strat_rows = get_task("inside").sample_batch(
        np.random.default_rng(3), pool, False, 20000, inside_sampler="stratified"
    )
    strat = _size_by_label([(len(cities_of(r)) - 1, r.endswith("=TRUE")) for r in strat_rows])
    for label in (True, False):
        (p_sim, n_sim), (p_ours, n_ours) = sim[label], ours[label]
        p = (p_sim * n_sim + p_ours * n_ours) / (n_sim + n_ours)
        se = np.sqrt(p * (1 - p) * (1 / n_sim + 1 / n_ours))
        assert np.all(np.abs(p_ours - p_sim) < 4.5 * se), (label, p_ours, p_sim)
    # The stratified option is uniform in n within TRUE rows, which the paper's sampler is not:
    # the comparison above would catch a sampler that draws n independently of the label.
    assert np.max(np.abs(strat[True][0] - sim[True][0])) > 0.1, strat[True]
    assert sim[True][0][2] > 0.4 and sim[True][0][0] < 0.25  # TRUE rows are mostly n = 5


def test_inside_degenerate_hull_is_false():
    # Six collinear cities: every hull is a segment, so the paper labels every row FALSE (even
    # a test city lying on the segment) and no TRUE quota can be filled.
    line = tiny_table([(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (50, 0)])
    with pytest.raises(SamplingError, match="inside"):
        get_task("inside").sample_batch(np.random.default_rng(0), line_pool(line), False, 2)
    assert not hull_has_area([0, 10, 20], [0, 0, 0])
    assert not hull_has_area([0, 0, 10, 10], [0, 0, 10, 10])  # repeated points on a diagonal
    assert hull_has_area([0, 10, 5], [0, 0, 9])
    assert hull_has_area([0, 10, 20, 5], [0, 0, 0, 1])
    assert not inside_paper((5, 0), [(0, 0), (10, 0), (20, 0)])  # the independent rule agrees


@pytest.mark.parametrize("req", [False, True])
def test_perimeter(rows, lookup, req):
    for row in rows["perimeter", req]:
        pts = [xy(lookup, c) for c in cities_of(row)]
        if len(pts) == 2:  # the paper's n = 2: the single distance
            total = math.dist(*pts)
        else:
            total = sum(math.dist(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts)))
        check_rounded(split_prompt(row)[1], total)


def test_perimeter_two_cities_hand_worked():
    # A(0,0) B(3,4) C(6,0) D(0,8) E(9,12): pair distances worked by hand, rounded.
    pts = [(0, 0), (3, 4), (6, 0), (0, 8), (9, 12)]
    hand = {
        (1, 2): 5, (1, 3): 6, (1, 4): 8, (1, 5): 15, (2, 3): 5,
        (2, 4): 5, (2, 5): 10, (3, 4): 10, (3, 5): 12, (4, 5): 10,
    }  # fmt: skip
    rows = get_task("perimeter").sample_batch(
        np.random.default_rng(1), line_pool(tiny_table(pts)), False, 400
    )
    two = [r for r in rows if len(cities_of(r)) == 2]
    assert len(two) > 50
    for row in two:
        a, b = sorted(int(c[2:]) for c in cities_of(row))
        assert int(split_prompt(row)[1]) == hand[a, b], row  # not twice the distance


@pytest.mark.parametrize("req", [False, True])
def test_crossing_label_matches_printed_order(rows, lookup, req):
    labels = []
    for row in rows["crossing", req]:
        p = [xy(lookup, c) for c in cities_of(row)]
        labels.append(split_prompt(row)[1])
        assert labels[-1] == ("TRUE" if crossing_paper(*p) else "FALSE"), row
    assert 0.1 < labels.count("TRUE") / len(labels) < 0.45  # the shuffle unbalances it


@pytest.mark.parametrize("req", [False, True])
def test_crossing_balanced_before_shuffle(pool, req):
    # The paper's generate_crossing_pairs: n_true = int(n_samples * true_ratio) exactly.
    for n in (7, 1001):
        _, lab = sample_crossing_balanced(np.random.default_rng(n), pool, req, n)
        assert lab.sum() == int(n * 0.5)
    idx, labels = sample_crossing_balanced(np.random.default_rng(5), pool, req, 4000)
    assert labels.sum() == 2000 and 0.3 < labels[:2000].mean() < 0.7  # in random order
    for row, label in zip(idx[:500], labels[:500], strict=True):
        p = [(int(pool.x[i]), int(pool.y[i])) for i in row]
        assert crossing_paper(*p) == bool(label)


def test_crossing_shuffle_changes_label_on_a_square():
    sq = {"a": (0, 0), "b": (10, 10), "c": (0, 10), "d": (10, 0)}
    # Diagonals cross; after reordering the same four corners the segments are opposite sides.
    assert crossing_paper(sq["a"], sq["b"], sq["c"], sq["d"])
    assert not crossing_paper(sq["a"], sq["c"], sq["b"], sq["d"])
    assert segments_intersect(*sq["a"], *sq["b"], *sq["c"], *sq["d"])
    assert not segments_intersect(*sq["a"], *sq["c"], *sq["b"], *sq["d"])
    # With only these four cities, balanced generation + shuffle gives TRUE for exactly the
    # diagonal pairing (1/3 of orders): the label must follow the printed order.
    df = pd.DataFrame(
        {
            "city_id": [1, 2, 3, 4],
            "name": list(sq),
            "x": [p[0] for p in sq.values()],
            "y": [p[1] for p in sq.values()],
            "is_atlantis": False,
        }
    )
    pos = {f"c_{i:04d}": p for i, p in zip([1, 2, 3, 4], sq.values(), strict=True)}
    rows = get_task("crossing").sample_batch(
        np.random.default_rng(3), CityPool.from_frame(df), False, 900
    )
    for row in rows:
        p = [pos[c] for c in cities_of(row)]
        assert split_prompt(row)[1] == ("TRUE" if crossing_paper(*p) else "FALSE")
    share = sum(r.endswith("=TRUE") for r in rows) / len(rows)
    assert abs(share - 1 / 3) < 0.07


@pytest.mark.parametrize("option", ["paper", "reject"])
def test_coincident_cities(option):
    """angle and compass on a table where cities share coordinates, against the paper's
    functions (rounded as the audit's comparison does); "reject" redraws such rows."""
    pts = [(0, 0), (0, 0), (30, 40), (30, 40), (-20, 5), (7, -9)]
    df = tiny_table(pts)
    pos = {f"c_{i + 1:04d}": p for i, p in enumerate(pts)}
    rng = np.random.default_rng(5)
    seen = 0
    for row in get_task("angle").sample_batch(
        rng, line_pool(df), False, 600, coincident_cities=option
    ):
        a, b, c = (pos[k] for k in cities_of(row))
        same = a == b or b == c
        seen += same
        want = float(angle_paper(*a, *b, *c))
        if not near_half(want):
            assert int(split_prompt(row)[1]) == round(want), row
    assert (seen > 50) if option == "paper" else (seen == 0)
    seen = 0
    for row in get_task("compass").sample_batch(
        rng, line_pool(df), False, 600, coincident_cities=option
    ):
        a, b = (pos[k] for k in cities_of(row))
        seen += a == b
        assert split_prompt(row)[1] == compass_paper(*a, *b), row
    assert (seen > 20) if option == "paper" else (seen == 0)
    with pytest.raises(ValueError, match="data.coincident_cities"):
        get_task("compass").sample_batch(rng, line_pool(df), False, 2, coincident_cities="x")


def test_inside_hand_made_degenerate_hulls():
    line = ([0, 10, 20], [0, 0, 0])
    assert not point_in_convex_hull(30, 0, *line)  # on the line, beyond the segment
    assert point_in_convex_hull(5, 0, *line)
    assert not point_in_convex_hull(5, 1, *line)
    assert point_in_convex_hull(5, 5, [0, 0, 10], [0, 0, 10])  # repeated point, diagonal
    assert point_in_convex_hull(5, 0, [0, 10, 5], [0, 0, 9])  # on an edge counts as inside
    assert not point_in_convex_hull(5, -1, [0, 10, 5], [0, 0, 9])


def test_crossing_rules_on_a_grid_with_shared_points():
    """Both rules against their oracles on every 4-tuple of a small grid, shared and collinear
    points included (with cities sharing coordinates the rules differ)."""
    grid = [(x, y) for x in (0, 1, 2) for y in (0, 1, 2)]
    rng = np.random.default_rng(0)
    quads = np.array([rng.choice(len(grid), 4) for _ in range(6000)])
    g = np.array(grid)
    xs, ys = g[quads, 0], g[quads, 1]
    args = [a for k in range(4) for a in (xs[:, k], ys[:, k])]
    paper = segments_cross_paper(*args)
    closed = segments_intersect(*args)
    for q, pa, cl in zip(quads.tolist(), paper.tolist(), closed.tolist(), strict=True):
        pts = [grid[i] for i in q]
        assert pa == crossing_paper(*pts), pts
        assert cl == crossing_closed_independent(*pts), pts
    assert (paper != closed).sum() > 100
    # Touching at an endpoint: the paper's answer depends on the order of the points.
    assert crossing_paper((10, 0), (20, 5), (0, 0), (10, 0))
    assert not crossing_paper((20, 5), (10, 0), (0, 0), (10, 0))
    assert segments_cross_paper(10, 0, 20, 5, 0, 0, 10, 0)
    assert not segments_cross_paper(20, 5, 10, 0, 0, 0, 10, 0)


@pytest.mark.parametrize("rule", ["paper", "closed"])
def test_crossing_rows_with_shared_coordinates(rule):
    pts = [(0, 0), (10, 0), (10, 0), (5, 0), (0, 10), (10, 10), (5, 5), (5, 5), (20, 0)]
    df = tiny_table(pts)
    pos = {f"c_{i + 1:04d}": p for i, p in enumerate(pts)}
    oracle = crossing_paper if rule == "paper" else crossing_closed_independent
    rows = get_task("crossing").sample_batch(
        np.random.default_rng(2), line_pool(df), False, 800, crossing_rule=rule
    )
    for row in rows:
        assert split_prompt(row)[1] == (
            "TRUE" if oracle(*(pos[c] for c in cities_of(row))) else "FALSE"
        )
    with pytest.raises(ValueError, match="data.crossing_rule"):
        get_task("crossing").sample_batch(
            np.random.default_rng(2), line_pool(df), False, 8, crossing_rule="open"
        )


def test_segments_touching_and_collinear():
    assert segments_intersect(0, 0, 10, 0, 10, 0, 20, 5)  # shared endpoint
    assert segments_intersect(0, 0, 10, 0, 5, 0, 20, 0)  # collinear overlap
    assert not segments_intersect(0, 0, 10, 0, 11, 0, 20, 0)  # collinear, disjoint
    assert not segments_intersect(0, 0, 10, 0, 0, 1, 10, 1)  # parallel


# -- scoring and helpers --------------------------------------------------------------------------
# The paper's metric classes, re-typed from cfpark00/world-map-representation
# src/data_generation_v1/tasks/{distance,trianglearea,angle,perimeter,compass,inside,crossing}.py
# (<Task>Metric.calculate); the paper calls them with (prompt, true completion, the decoded
# prompt + continuation) (src/evaluation.py).
def paper_parse_distance(text):  # distance.py DistanceMetric._parse_distance
    text = text.replace(" ", "")
    match = re.search(r"=(\d+)", text)
    if match:
        return int(match.group(1))
    match = re.search(r"^(\d+)", text)
    if match:
        return int(match.group(1))
    return None


PAPER_FAIL = {
    "distance": math.sqrt(3600**2 + 1800**2),
    "trianglearea": (3600 * 1800) / 2,
    "angle": 180.0,
    "perimeter": 20000.0,
}
PAPER_PATTERN = {"trianglearea": r"=(\d+)", "angle": r"\)=(\d+)", "perimeter": r"\)=(\d+)"}


def paper_metric(task, prompt, true_completion, generated):
    if task == "distance":
        true_dist = paper_parse_distance(true_completion)
        gen_dist = paper_parse_distance(generated)
        if true_dist is not None and gen_dist is not None:
            return abs(true_dist - gen_dist)
        return PAPER_FAIL[task]
    if task in PAPER_PATTERN:
        pat = PAPER_PATTERN[task]
        true_match = re.search(pat, (prompt + true_completion).replace(" ", ""))
        gen_match = re.search(pat, generated.replace(" ", ""))
        if true_match and gen_match:
            return abs(int(gen_match.group(1)) - int(true_match.group(1)))
        return PAPER_FAIL[task]
    true_value = true_completion.replace(" ", "").strip().upper()
    if "<EOS>" in true_value:
        true_value = true_value.replace("<EOS>", "").strip()
    gen_no_space = generated.replace(" ", "")
    eq_pos = gen_no_space.rfind("=")
    if eq_pos != -1:
        gen_value = gen_no_space[eq_pos + 1 :].strip().upper()
    else:
        gen_value = gen_no_space.strip().upper()
    return 1.0 if true_value == gen_value else 0.0


SCORE_ROWS = {
    "distance": ["dist(c_0001,c_0002)=878", "dist(c_0001,c_0002)=0"],
    "trianglearea": ["triarea(c_0001,c_0002,c_0003)=5", "triarea(c_0001,c_0002,c_0003)=31415"],
    "angle": ["angle(c_0001,c_0002,c_0003)=90", "angle(c_0001,c_0002,c_0003)=0"],
    "perimeter": ["perimeter(c_0001,c_0002)=5", "perimeter(c_0001,c_0002,c_0003)=12000"],
    "compass": ["compass(c_0001,c_0002)=NE", "compass(c_0001,c_0002)=S"],
    "inside": ["inside(c_0001;c_0002,c_0003,c_0004)=TRUE", "inside(c_0001;c_0002,c_0003)=FALSE"],
    "crossing": [
        "cross(c_0001,c_0002;c_0003,c_0004)=TRUE",
        "cross(c_0001,c_0002;c_0003,c_0004)=FALSE",
    ],
}
OUTPUTS = [
    "", "878", "1333,c", "-5", "+-3", "12a", "1.5", "1 2", " 123\n", "99999", "abc", "0", "007",
    "=5", ")=9", "5)=9", "x=7y", "90", "5", "31415", "12000", "ne", "NE", " ne\n", "Ne,c", "N",
    "S", "s", "SW", "north", "TRUE", "true", "True ", "FALSE", "false", "TRU", "TRUE,c",
    "E=NE", "=s", "a=TRUE", "=", "=FALSE=", " F A L S E ",
]  # fmt: skip


@pytest.mark.parametrize("name", STUDY_TASKS)
def test_score_matches_the_papers_metric(name):
    task = get_task(name)
    for row in SCORE_ROWS[name]:
        prompt, truth = split_prompt(row)
        for out in OUTPUTS:
            want = paper_metric(name, prompt, truth, prompt + out)
            assert task.score(out, row) == want, (row, out)
            assert task.score(out, row, "paper") == want
            parsed = task.parse(out, prompt) is not None
            if task.metric == "mae":
                assert parsed == (want != PAPER_FAIL[name] or out.strip() == truth)
    assert task.fail_value == PAPER_FAIL.get(name)


def test_score_paper_examples():
    d = get_task("distance")
    row = "dist(c_0001,c_0002)=878"
    assert d.score("1333,c", row) == 455.0  # trailing junk ignored
    assert d.score("-5", row) == 4024.9223594996215  # a negative number fails
    assert d.parse("12a", "dist(c_0001,c_0002)=") == 12
    assert get_task("compass").score("ne", "compass(c_0001,c_0002)=NE") == 1.0
    assert get_task("inside").parse("true", "inside(c_0001;c_0002,c_0003,c_0004)=") == "TRUE"
    with pytest.raises(ValueError, match="eval.answer_parsing"):
        d.score("1", row, "loose")


def test_score_mae_strict():
    t = get_task("distance")
    row = "dist(c_0001,c_0002)=123"
    assert t.score("120", row, "strict") == 3.0
    assert t.score(" 123\n", row, "strict") == 0.0
    assert t.score("99999", row, "strict") == 99876.0  # not capped at fail_value
    assert t.score("-5", row, "strict") == 128.0
    for bad in ("", "abc", "12a", "1.5", "1 2", "+-3"):
        assert t.score(bad, row, "strict") == t.fail_value
        assert t.parse(bad, parsing="strict") is None
    assert t.parse("42", parsing="strict") == 42
    assert get_task("trianglearea").score("x", "triarea(c_0001,c_0002,c_0003)=5") == 3_240_000
    assert get_task("angle").score("", "angle(c_0001,c_0002,c_0003)=5") == 180
    assert get_task("perimeter").score("?", "perimeter(c_0001,c_0002)=5") == 20_000


def test_score_accuracy_strict():
    t = get_task("compass")
    row = "compass(c_0001,c_0002)=NE"
    assert t.score("NE", row, "strict") == 1.0 and t.score(" NE\n", row, "strict") == 1.0
    assert t.score("ne", row, "strict") == 0.0 and t.score("N", row, "strict") == 0.0
    assert t.score("", row, "strict") == 0.0
    assert t.parse("SW", parsing="strict") == "SW" and t.parse("north", parsing="strict") is None
    inside = get_task("inside")
    row = "inside(c_0001;c_0002,c_0003,c_0004)=TRUE"
    assert inside.score("TRUE", row, "strict") == 1.0
    assert inside.score("FALSE", row, "strict") == 0.0


def test_paper_generation_budgets():
    # src/evaluation.py: 30 new tokens for trianglearea, angle and perimeter, else 20.
    want = {"trianglearea": 30, "angle": 30, "perimeter": 30}
    for name, task in TASKS.items():
        assert task.max_new_tokens == want.get(name, 20)


def test_prompts_and_lookup():
    assert get_task("distance").probe_prompt("c_1234") == "dist(c_1234,"
    assert get_task("inside").probe_prompt("c_1234") == "inside(c_1234;"
    assert get_task("crossing").probe_prompt("c_1234") == "cross(c_1234,"
    assert split_prompt("dist(c_0001,c_0002)=123") == ("dist(c_0001,c_0002)=", "123")
    assert task_of_row("cross(c_0001,c_0002;c_0003,c_0004)=TRUE").name == "crossing"
    with pytest.raises(KeyError, match="known tasks: distance, trianglearea"):
        get_task("nope")
    with pytest.raises(KeyError):
        task_of_row("nope(c_0001)=1")


def tiny_table(points) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city_id": list(range(1, len(points) + 1)),
            "name": [f"p{i}" for i in range(len(points))],
            "x": [p[0] for p in points],
            "y": [p[1] for p in points],
            "is_atlantis": False,
        }
    )


def line_pool(df) -> CityPool:
    return CityPool.from_frame(df)


def test_task_options_are_checked(pool):
    with pytest.raises(TypeError, match="unknown task options"):
        get_task("distance").sample_batch(np.random.default_rng(0), pool, False, 2, foo=1)
    with pytest.raises(ValueError, match="inside_sampler"):
        get_task("inside").sample_batch(
            np.random.default_rng(0), pool, False, 2, inside_sampler="nope"
        )
    # Options a task does not take are ignored, so one dict serves every task.
    get_task("distance").sample_batch(
        np.random.default_rng(0), pool, False, 2, inside_sampler="paper"
    )


def test_sample_is_deterministic(pool):
    for task in TASKS.values():
        a = [task.sample(np.random.default_rng(9), pool, True) for _ in range(2)]
        assert a[0] == a[1]
        assert re.fullmatch(FORMATS[task.name], a[0])
