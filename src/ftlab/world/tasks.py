"""The seven geometry tasks (design doc, "Tasks") as a registry of data-like ``Task`` objects.

A row is ``<prefix>(<cities>)=<answer>`` without bos/eos, e.g. ``dist(c_0865,c_1234)=123``.
The definitions follow the paper's generators (cfpark00/world-map-representation,
``src/data_generation_v1/tasks/*.py``); where the paper leaves a case open it is fixed here once
for every consumer:

- Geometry is flat 2-D Euclidean in the integer x/y units of the city table (y = north).
- Integer answers are Python ``round()`` of the exact float value (round half to even), unpadded.
- Cities within a row are distinct city ids (sampled without replacement); different ids may still
  share coordinates (real cities do: several GeoNames cities round to the same 0.1 degree cell).
  Option ``coincident_cities`` (default ``"paper"``): ``angle`` answers 0 when the middle city
  shares coordinates with an end (the paper's NaN -> 0) and ``compass`` answers N when A and B
  share coordinates (the paper's special case); ``"reject"`` (an ftlab option) redraws those
  rows instead.
- ``angle(A,B,C)`` is the angle AT THE MIDDLE city B, in degrees 0..180.
- ``compass(A,B)``: direction from A to B, 8 sectors of 45 degrees of atan2(dy, dx), each closed
  at its clockwise end: E = [-22.5, 22.5), NE = [22.5, 67.5), N, NW, W = [157.5, 202.5), SW, S,
  SE = [-67.5, -22.5). Integer coordinates never fall exactly on a boundary (tan 22.5 is
  irrational), so the convention only matters for documentation.
- ``inside(T;P1..Pn)``: TRUE iff T lies inside OR ON the convex hull of P1..Pn (n = 3..5) and
  that hull has a positive area; a degenerate hull (all hull cities collinear, repeated
  coordinates included) gives FALSE, as the paper's qhull test does.
- ``cross(P1,P2;P3,P4)`` (option ``crossing_rule``, default ``"paper"``): the paper's
  ``segments_intersect`` (tasks/crossing.py) with its strict orientation test
  ccw(A,B,C) = (Cy-Ay)(Bx-Ax) > (By-Ay)(Cx-Ax): TRUE iff ccw(P1,P3,P4) != ccw(P2,P3,P4) and
  ccw(P1,P2,P3) != ccw(P1,P2,P4). A collinear triple counts as clockwise, so touching and
  collinear cases (cities share coordinates) get TRUE or FALSE depending on the order of the
  points. ``"closed"`` (an ftlab option): TRUE iff the closed segments share a point.
- ``perimeter(P1..Pn)``: closed polygon in the given order, n = 2..5; for n = 2 the answer is the
  single distance, not twice it (the paper's ``calculate_perimeter``). Rounded once at the end.
- ``require_atlantis=True``: one uniformly random position holds an Atlantis city, the other
  positions are drawn from all cities; ``False``: only real cities.
- ``inside`` (option ``inside_sampler``, default ``"paper"``): every attempt redraws the hull
  size n in 3..5 and the cities; the attempt is kept while its label's quota is open, with
  int(rows / 2) TRUE and the rest FALSE quotas per batch; the kept rows are then shuffled. So n
  correlates with the label (TRUE rows are mostly n = 5), as in the paper. ``"stratified"``
  (an ftlab option) draws label and n independently first, so n is uniform within each label.
- ``cross`` fills exact quotas as the paper: int(rows / 2) TRUE and the rest FALSE per batch
  (test set, 4096-row train chunk), each row rejection-sampled until the geometry matches its
  label, then shuffles its four cities and recomputes the label.

Sampling is vectorised (``Task.sample_batch``) so that ~1M rows per task take seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations, combinations_with_replacement

import numpy as np
import pandas as pd

from ftlab.study import TASKS as TASK_ORDER
from ftlab.world.cities import format_city_id

COMPASS_SECTORS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")  # counter-clockwise from east
BOOL_LABELS = ("TRUE", "FALSE")
MAX_ROUNDS = 5000  # rejection rounds per batch before giving up (tiny or degenerate city sets)
INSIDE_SAMPLERS = ("paper", "stratified")  # see the module docstring
INSIDE_TRUE_RATIO = 0.5  # the paper's true_ratio
INSIDE_MIN_ATTEMPTS = 100_000  # the paper gives up after 100 * rows attempts; at least this many


class SamplingError(RuntimeError):
    """Rejection sampling found no valid rows for a task within its budget."""


# -- geometry (vectorised over numpy arrays; plain ints work too) -------------------------------
def orient(ox, oy, ax, ay, bx, by):
    """Cross product (A - O) x (B - O): > 0 if O, A, B turn counter-clockwise."""
    return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox)


def shoelace_area(xs, ys):
    """Area of the polygon with vertices along the last axis (shoelace formula)."""
    xs, ys = np.asarray(xs), np.asarray(ys)
    s = xs * np.roll(ys, -1, axis=-1) - np.roll(xs, -1, axis=-1) * ys
    return np.abs(s.sum(axis=-1)) / 2


def angle_at(ax, ay, bx, by, cx, cy):
    """Angle ABC at the middle point B in degrees, 0..180 (undefined if B equals A or C)."""
    ux, uy, vx, vy = ax - bx, ay - by, cx - bx, cy - by
    return np.degrees(np.arctan2(np.abs(ux * vy - uy * vx), ux * vx + uy * vy))


def compass_sector(dx, dy):
    """Index into COMPASS_SECTORS of the direction (dx, dy) (see module docstring)."""
    deg = np.degrees(np.arctan2(dy, dx))
    return np.floor((deg + 22.5) / 45).astype(np.int64) % 8


def _in_box(px, py, xs, ys):
    """P within the bounding box of the points stacked along the last axis of xs/ys."""
    return (
        (px >= xs.min(axis=-1))
        & (px <= xs.max(axis=-1))
        & (py >= ys.min(axis=-1))
        & (py <= ys.max(axis=-1))
    )


def in_triangle(tx, ty, ax, ay, bx, by, cx, cy):
    """T inside or on the closed triangle ABC; exact for integer input, also when ABC is
    degenerate (a segment or a point): the sign test rejects points off the line and the
    bounding box then decides for points on it."""
    d1, d2, d3 = (
        orient(ax, ay, bx, by, tx, ty),
        orient(bx, by, cx, cy, tx, ty),
        orient(cx, cy, ax, ay, tx, ty),
    )
    has_neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    has_pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    box = _in_box(tx, ty, np.stack([ax, bx, cx], -1), np.stack([ay, by, cy], -1))
    return ~(has_neg & has_pos) & box


def point_in_convex_hull(tx, ty, px, py):
    """T inside or on the convex hull of the points along the last axis of px/py.

    In 2-D a point is in the hull iff it is in some triangle of three of the points
    (Caratheodory), which keeps the test exact in integers and vectorised over rows.
    """
    px, py = np.asarray(px), np.asarray(py)
    n = px.shape[-1]
    triples = combinations(range(n), 3) if n >= 3 else combinations_with_replacement(range(n), 3)
    out = np.zeros(np.broadcast(tx, px[..., 0]).shape, dtype=bool)
    for i, j, k in triples:
        out |= in_triangle(
            tx, ty, px[..., i], py[..., i], px[..., j], py[..., j], px[..., k], py[..., k]
        )
    return out


def hull_has_area(px, py):
    """The points along the last axis of px/py are not all collinear (their hull has area)."""
    px, py = np.asarray(px), np.asarray(py)
    n = px.shape[-1]
    out = np.zeros(px.shape[:-1], dtype=bool)
    for i, j, k in combinations(range(n), 3):
        out |= orient(px[..., i], py[..., i], px[..., j], py[..., j], px[..., k], py[..., k]) != 0
    return out


def _ccw(ax, ay, bx, by, cx, cy):
    """The paper's strict ccw (tasks/crossing.py): False for a collinear triple."""
    return (cy - ay) * (bx - ax) > (by - ay) * (cx - ax)


def segments_cross_paper(x1, y1, x2, y2, x3, y3, x4, y4):
    """The paper's segments_intersect (tasks/crossing.py), exact for integers."""
    return (_ccw(x1, y1, x3, y3, x4, y4) != _ccw(x2, y2, x3, y3, x4, y4)) & (
        _ccw(x1, y1, x2, y2, x3, y3) != _ccw(x1, y1, x2, y2, x4, y4)
    )


def segments_intersect(x1, y1, x2, y2, x3, y3, x4, y4):
    """The closed segments P1-P2 and P3-P4 share at least one point (exact for integers)."""
    o1, o2 = np.sign(orient(x1, y1, x2, y2, x3, y3)), np.sign(orient(x1, y1, x2, y2, x4, y4))
    o3, o4 = np.sign(orient(x3, y3, x4, y4, x1, y1)), np.sign(orient(x3, y3, x4, y4, x2, y2))
    s12x, s12y = np.stack([x1, x2], -1), np.stack([y1, y2], -1)
    s34x, s34y = np.stack([x3, x4], -1), np.stack([y3, y4], -1)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touching = (
        ((o1 == 0) & _in_box(x3, y3, s12x, s12y))
        | ((o2 == 0) & _in_box(x4, y4, s12x, s12y))
        | ((o3 == 0) & _in_box(x1, y1, s34x, s34y))
        | ((o4 == 0) & _in_box(x2, y2, s34x, s34y))
    )
    return proper | touching


# -- the cities a task samples from --------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CityPool:
    """The city table as numpy arrays, plus index arrays of the real and the Atlantis cities."""

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    is_atlantis: np.ndarray
    labels: list[str]  # c_%04d per city, so formatting a row is a list lookup
    real_idx: np.ndarray
    atlantis_idx: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> CityPool:
        ids = df["city_id"].to_numpy(dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("city table has duplicate city_id values")
        is_atl = df["is_atlantis"].to_numpy(dtype=bool)
        return cls(
            ids=ids,
            x=df["x"].to_numpy(dtype=np.int64),
            y=df["y"].to_numpy(dtype=np.int64),
            is_atlantis=is_atl,
            labels=[format_city_id(i) for i in ids.tolist()],
            real_idx=np.flatnonzero(~is_atl),
            atlantis_idx=np.flatnonzero(is_atl),
        )

    def __len__(self) -> int:
        return len(self.ids)


def _draw(rng: np.random.Generator, pool: CityPool, require_atlantis: bool, m: int, k: int):
    """(m, k) city indices; with require_atlantis one random position per row is Atlantis."""
    if not require_atlantis:
        return pool.real_idx[rng.integers(0, len(pool.real_idx), size=(m, k))]
    idx = rng.integers(0, len(pool), size=(m, k))
    pos = rng.integers(0, k, size=m)
    idx[np.arange(m), pos] = pool.atlantis_idx[rng.integers(0, len(pool.atlantis_idx), size=m)]
    return idx


def _fill(
    rng: np.random.Generator,
    pool: CityPool,
    require_atlantis: bool,
    k: int,
    n: int,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    task: str,
) -> np.ndarray:
    """(n, k) distinct-per-row city indices, each row redrawn until ``accept(idx, rows)`` holds
    (``rows``: which output rows the candidates are for, e.g. to look up target labels)."""
    available = len(pool) if require_atlantis else len(pool.real_idx)
    if require_atlantis and len(pool.atlantis_idx) == 0:
        raise SamplingError(f"{task}: atlantis_required rows need Atlantis cities; there are none")
    if available < k:
        raise SamplingError(f"{task}: rows need {k} distinct cities, only {available} available")
    out = np.empty((n, k), dtype=np.int64)
    pending = np.arange(n)
    for _ in range(MAX_ROUNDS):
        if pending.size == 0:
            return out
        cand = _draw(rng, pool, require_atlantis, pending.size, k)
        s = np.sort(cand, axis=1)
        ok = np.all(s[:, 1:] != s[:, :-1], axis=1)
        if accept is not None:
            ok &= accept(cand, pending)
        out[pending[ok]] = cand[ok]
        pending = pending[~ok]
    if pending.size == 0:
        return out
    raise SamplingError(
        f"{task}: rejection sampling left {pending.size} of {n} rows without valid cities after "
        f"{MAX_ROUNDS} rounds; the city set is too small or degenerate for this task"
    )


def _rows(prefix: str, pool: CityPool, idx: np.ndarray, answers, split: int | None) -> list[str]:
    """Format rows; ``split`` = number of ids before the ';' (None: no ';')."""
    lab = pool.labels
    out = []
    for ids, ans in zip(idx.tolist(), answers, strict=True):
        names = [lab[i] for i in ids]
        if split is None:
            args = ",".join(names)
        else:
            args = ",".join(names[:split]) + ";" + ",".join(names[split:])
        out.append(f"{prefix}({args})={ans}")
    return out


def _rounded(values: np.ndarray) -> list[int]:
    return [round(v) for v in values.tolist()]  # Python round() of the exact float


def _by_size(n: int, sizes: np.ndarray, make: Callable[[np.ndarray, int], list[str]]) -> list[str]:
    """Rows whose city count varies: generate each size group, keep the drawn row order."""
    rows: list[str] = [""] * n
    for k in np.unique(sizes).tolist():
        where = np.flatnonzero(sizes == k)
        for r, row in zip(where.tolist(), make(where, k), strict=True):
            rows[r] = row
    return rows


# -- samplers: (rng, pool, require_atlantis, n) -> n rows ----------------------------------------
def _sample_distance(rng, pool, req, n):
    idx = _fill(rng, pool, req, 2, n, None, "distance")
    x, y = pool.x[idx], pool.y[idx]
    return _rows("dist", pool, idx, _rounded(np.hypot(x[:, 1] - x[:, 0], y[:, 1] - y[:, 0])), None)


def _sample_trianglearea(rng, pool, req, n):
    idx = _fill(rng, pool, req, 3, n, None, "trianglearea")
    area = shoelace_area(pool.x[idx], pool.y[idx])
    return _rows("triarea", pool, idx, _rounded(area), None)


COINCIDENT_CITIES = ("paper", "reject")  # see the module docstring


def _reject_coincident(coincident_cities: str) -> bool:
    if coincident_cities not in COINCIDENT_CITIES:
        raise ValueError(
            f"data.coincident_cities: unknown {coincident_cities!r}; known: {COINCIDENT_CITIES}"
        )
    return coincident_cities == "reject"


def _sample_angle(rng, pool, req, n, coincident_cities="paper"):
    def defined(c, _rows):
        x, y = pool.x[c], pool.y[c]
        end_a = (x[:, 0] != x[:, 1]) | (y[:, 0] != y[:, 1])
        end_c = (x[:, 2] != x[:, 1]) | (y[:, 2] != y[:, 1])
        return end_a & end_c

    # A coincident end gives atan2(0, 0) = 0 degrees, the paper's answer.
    accept = defined if _reject_coincident(coincident_cities) else None
    idx = _fill(rng, pool, req, 3, n, accept, "angle")
    x, y = pool.x[idx], pool.y[idx]
    deg = angle_at(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    return _rows("angle", pool, idx, _rounded(deg), None)


def _sample_compass(rng, pool, req, n, coincident_cities="paper"):
    def defined(c, _rows):
        return (pool.x[c[:, 0]] != pool.x[c[:, 1]]) | (pool.y[c[:, 0]] != pool.y[c[:, 1]])

    accept = defined if _reject_coincident(coincident_cities) else None
    idx = _fill(rng, pool, req, 2, n, accept, "compass")
    x, y = pool.x[idx], pool.y[idx]
    dx, dy = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    sectors = np.where((dx == 0) & (dy == 0), COMPASS_SECTORS.index("N"), compass_sector(dx, dy))
    return _rows("compass", pool, idx, [COMPASS_SECTORS[s] for s in sectors.tolist()], None)


def _inside_of(pool: CityPool, idx: np.ndarray) -> np.ndarray:
    """The paper's label: in or on the hull of cities 1.., FALSE for a hull without area."""
    x, y = pool.x[idx], pool.y[idx]
    hx, hy = x[:, 1:], y[:, 1:]
    return point_in_convex_hull(x[:, 0], y[:, 0], hx, hy) & hull_has_area(hx, hy)


def _bool_labels(values) -> list[str]:
    return [BOOL_LABELS[0] if t else BOOL_LABELS[1] for t in values]


def _sample_inside(rng, pool, req, n, inside_sampler: str = "paper"):
    if inside_sampler == "paper":
        return _sample_inside_paper(rng, pool, req, n)
    if inside_sampler == "stratified":
        return _sample_inside_stratified(rng, pool, req, n)
    raise ValueError(f"unknown inside_sampler {inside_sampler!r}; known: {INSIDE_SAMPLERS}")


def _sample_inside_paper(rng, pool, req, n):
    """The paper's ``generate_inside_samples``: each attempt draws the hull size n_hull in 3..5
    and n_hull + 1 distinct cities (the first is the test city); the attempt is kept if its
    label's quota (int(n * 0.5) TRUE, the rest FALSE) is still open. Kept rows are shuffled."""
    quota = {True: int(n * INSIDE_TRUE_RATIO)}
    quota[False] = n - quota[True]
    kept: dict[bool, list[np.ndarray]] = {True: [], False: []}
    have = {True: 0, False: 0}
    budget = max(100 * n, INSIDE_MIN_ATTEMPTS)
    attempts = 0
    while have[True] < quota[True] or have[False] < quota[False]:
        if attempts >= budget:
            raise SamplingError(
                f"inside: {attempts} attempts filled {have[True]} of {quota[True]} TRUE and "
                f"{have[False]} of {quota[False]} FALSE rows; the city set is too small or "
                "degenerate for this task"
            )
        need = quota[True] - have[True] + quota[False] - have[False]
        m = min(max(2 * need, 256), budget - attempts)
        attempts += m
        hull_n = rng.integers(3, 6, size=m)  # redrawn on every attempt
        cand = np.full((m, 6), -1, dtype=np.int64)
        label = np.zeros(m, dtype=bool)
        for k in np.unique(hull_n).tolist():
            where = np.flatnonzero(hull_n == k)
            idx = _fill(rng, pool, req, k + 1, where.size, None, "inside")
            cand[where, : k + 1] = idx
            label[where] = _inside_of(pool, idx)
        for want in (True, False):  # in attempt order, while the quota is open
            take = np.flatnonzero(label == want)[: quota[want] - have[want]]
            kept[want].append(cand[take])
            have[want] += take.size
    idx = np.concatenate(kept[True] + kept[False])
    labels = np.repeat([True, False], [quota[True], quota[False]])
    order = rng.permutation(n)
    idx, labels = idx[order], labels[order]
    sizes = (idx >= 0).sum(axis=1)

    def make(where, k):
        return _rows("inside", pool, idx[where, :k], _bool_labels(labels[where].tolist()), 1)

    return _by_size(n, sizes, make)


def _sample_inside_stratified(rng, pool, req, n):
    # ftlab option: label and hull size are drawn first, so n stays uniform within each label.
    target = rng.random(n) < 0.5
    sizes = rng.integers(3, 6, size=n) + 1  # T plus 3..5 hull cities

    def make(where, k):
        want = target[where]
        idx = _fill(
            rng, pool, req, k, where.size, lambda c, r: _inside_of(pool, c) == want[r], "inside"
        )
        return _rows("inside", pool, idx, _bool_labels(want.tolist()), 1)

    return _by_size(n, sizes, make)


CROSSING_RULES = ("paper", "closed")  # see the module docstring
CROSSING_TRUE_RATIO = 0.5  # the paper's true_ratio


def _crosses(pool: CityPool, idx: np.ndarray, crossing_rule: str = "paper") -> np.ndarray:
    if crossing_rule not in CROSSING_RULES:
        raise ValueError(f"data.crossing_rule: unknown {crossing_rule!r}; known: {CROSSING_RULES}")
    rule = segments_cross_paper if crossing_rule == "paper" else segments_intersect
    x, y = pool.x[idx], pool.y[idx]
    return rule(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2], x[:, 3], y[:, 3])


def sample_crossing_balanced(
    rng: np.random.Generator,
    pool: CityPool,
    require_atlantis: bool,
    n: int,
    crossing_rule: str = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """The crossing generator BEFORE the shuffle: (n, 4) city indices and their labels. As the
    paper's generate_crossing_pairs (true_ratio 0.5): exactly int(n * 0.5) TRUE rows and the
    rest FALSE, in random order, each matched by rejection sampling (the same distribution as
    the paper's attempts kept while their label's quota is open)."""
    _crosses(pool, np.zeros((0, 4), dtype=np.int64), crossing_rule)  # check the rule first
    target = np.zeros(n, dtype=bool)
    target[: int(n * CROSSING_TRUE_RATIO)] = True
    target = rng.permutation(target)
    idx = _fill(
        rng,
        pool,
        require_atlantis,
        4,
        n,
        lambda c, r: _crosses(pool, c, crossing_rule) == target[r],
        "crossing",
    )
    return idx, target


def _sample_crossing(rng, pool, req, n, crossing_rule="paper"):
    idx, _ = sample_crossing_balanced(rng, pool, req, n, crossing_rule)
    # Shuffle the four cities and recompute: the printed label must match the printed order.
    perm = rng.permuted(np.tile(np.arange(4), (n, 1)), axis=1)
    idx = np.take_along_axis(idx, perm, axis=1)
    labels = _bool_labels(_crosses(pool, idx, crossing_rule).tolist())
    return _rows("cross", pool, idx, labels, 2)


def _sample_perimeter(rng, pool, req, n):
    sizes = rng.integers(2, 6, size=n)

    def make(where, k):
        idx = _fill(rng, pool, req, k, where.size, None, "perimeter")
        x, y = pool.x[idx], pool.y[idx]
        sides = np.hypot(np.roll(x, -1, axis=1) - x, np.roll(y, -1, axis=1) - y)
        # n = 2: the single distance (the paper's calculate_perimeter stops after one side).
        total = sides[:, 0] if k == 2 else sides.sum(axis=1)
        return _rows("perimeter", pool, idx, _rounded(total), None)

    return _by_size(n, sizes, make)


# -- the registry ---------------------------------------------------------------------------------
_INT = re.compile(r"-?\d+")
ANSWER_PARSINGS = ("paper", "strict")  # config: eval.answer_parsing


@dataclass(frozen=True)
class Task:
    """One task: its row format, metric and sampler. ``fail_value`` is the error charged for an
    unparsable prediction (mae tasks); accuracy tasks score unparsable predictions 0.
    ``answer_pattern``: the regex whose group 1 is the answer in the paper's metric (searched
    in prompt + continuation with spaces removed; mae tasks)."""

    name: str
    prefix: str
    metric: str  # "mae" | "accuracy"
    fail_value: float | None
    first_delimiter: str  # character after the first city id
    labels: tuple[str, ...] = ()  # the possible answers of an accuracy task
    sampler: Callable = field(default=None, repr=False, compare=False)
    options: tuple[str, ...] = ()  # keyword options of the sampler (see TASK_OPTIONS)
    answer_pattern: str = ""
    max_new_tokens: int = 20  # the paper's generation budget (src/evaluation.py)

    def sample_batch(
        self,
        rng: np.random.Generator,
        pool: CityPool,
        require_atlantis: bool,
        n: int,
        **options,
    ) -> list[str]:
        """``n`` rows. ``options`` may hold any study-wide task option (TASK_OPTIONS); those
        this task does not take are ignored. ``inside``'s paper sampler fills its TRUE/FALSE
        quotas per call, so one call of ``n`` rows is not ``n`` calls of :meth:`sample`."""
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"unknown task options {sorted(unknown)}; known: {TASK_OPTIONS}")
        mine = {k: v for k, v in options.items() if k in self.options}
        return self.sampler(rng, pool, require_atlantis, n, **mine)

    def sample(self, rng: np.random.Generator, pool: CityPool, require_atlantis: bool) -> str:
        """One full row without bos/eos (``inside`` with the paper's sampler: a batch of one row
        has a TRUE quota of int(0.5) = 0, so it is always FALSE)."""
        return self.sample_batch(rng, pool, require_atlantis, 1)[0]

    def answer_of(self, row: str) -> str:
        return split_prompt(row)[1]

    def parse(self, prediction: str, prompt: str = "", parsing: str = "paper") -> int | str | None:
        r"""The prediction (the continuation of ``prompt``) as an answer of this task, or None.

        parsing "paper" (the paper's metric classes, ``src/data_generation_v1/tasks/*.py``):
        the text is prompt + prediction with spaces removed; mae tasks take the digits of the
        task's ``answer_pattern`` match (distance: ``=(\d+)``, else ``^(\d+)``), so trailing
        characters are ignored and a negative number does not parse; accuracy tasks take what
        follows the last ``=``, stripped and upper-cased, and it parses if it is a label.
        "strict" (an ftlab option): the whole stripped prediction must be an integer
        (``-`` allowed) or exactly a label."""
        if parsing == "strict":
            s = prediction.strip()
            if self.metric == "mae":
                return int(s) if _INT.fullmatch(s) else None
            return s if s in self.labels else None
        if parsing != "paper":
            raise ValueError(
                f"eval.answer_parsing: unknown answer parsing {parsing!r}; known: {ANSWER_PARSINGS}"
            )
        text = (prompt + prediction).replace(" ", "")
        if self.metric == "mae":
            m = re.search(self.answer_pattern, text)
            if m is None and self.name == "distance":  # DistanceMetric._parse_distance
                m = re.search(r"^(\d+)", text)
            return int(m.group(1)) if m else None
        eq = text.rfind("=")
        value = (text[eq + 1 :] if eq != -1 else text).strip().upper()
        return value if value in self.labels else None

    def score(self, prediction: str, row: str, parsing: str = "paper") -> float:
        """mae: |prediction - truth| (uncapped), ``fail_value`` if unparsable;
        accuracy: 1.0 if the parsed prediction equals the answer, else 0.0 (see :meth:`parse`;
        "paper" compares the upper-cased answer after the last ``=``, "strict" the stripped
        prediction)."""
        prompt, truth = split_prompt(row)
        value = self.parse(prediction, prompt, parsing)
        if self.metric == "mae":
            return float(self.fail_value) if value is None else float(abs(value - int(truth)))
        if parsing == "paper":
            return 1.0 if value == truth.replace(" ", "").strip().upper() else 0.0
        return 1.0 if prediction.strip() == truth else 0.0

    def probe_prompt(self, city: str) -> str:
        """Prompt for representation probes: ``dist(c_1234,``, ``inside(c_1234;``."""
        return f"{self.prefix}({city}{self.first_delimiter}"


# The paper's fail values (its <Task>Metric.failure_value): the diagonal, half the area of the
# 3600 x 1800 map, 180 degrees, 20000.
DISTANCE_FAIL = math.sqrt(3600**2 + 1800**2)  # 4024.9223594996215
_ALL = (
    Task(
        "distance",
        "dist",
        "mae",
        DISTANCE_FAIL,
        ",",
        sampler=_sample_distance,
        answer_pattern=r"=(\d+)",
    ),
    Task(
        "trianglearea",
        "triarea",
        "mae",
        3600 * 1800 / 2,
        ",",
        sampler=_sample_trianglearea,
        answer_pattern=r"=(\d+)",
        max_new_tokens=30,
    ),
    Task(
        "angle",
        "angle",
        "mae",
        180.0,
        ",",
        sampler=_sample_angle,
        options=("coincident_cities",),
        answer_pattern=r"\)=(\d+)",
        max_new_tokens=30,
    ),
    Task(
        "compass",
        "compass",
        "accuracy",
        None,
        ",",
        COMPASS_SECTORS,
        _sample_compass,
        ("coincident_cities",),
    ),
    Task(
        "inside", "inside", "accuracy", None, ";", BOOL_LABELS, _sample_inside, ("inside_sampler",)
    ),
    Task(
        "perimeter",
        "perimeter",
        "mae",
        20_000.0,
        ",",
        sampler=_sample_perimeter,
        answer_pattern=r"\)=(\d+)",
        max_new_tokens=30,
    ),
    Task(
        "crossing",
        "cross",
        "accuracy",
        None,
        ",",
        BOOL_LABELS,
        _sample_crossing,
        ("crossing_rule",),
    ),
)
TASK_OPTIONS = ("inside_sampler", "crossing_rule", "coincident_cities")  # config: data.<option>
TASKS: dict[str, Task] = {t.name: t for t in sorted(_ALL, key=lambda t: TASK_ORDER.index(t.name))}
assert tuple(TASKS) == TASK_ORDER, "the registry must cover exactly ftlab.study.TASKS"
_BY_PREFIX = {t.prefix: t for t in TASKS.values()}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def split_prompt(row: str) -> tuple[str, str]:
    """(prompt up to and including the first '=', answer)."""
    i = row.index("=")
    return row[: i + 1], row[i + 1 :]


def task_of_row(row: str) -> Task:
    prefix = row.split("(", 1)[0]
    try:
        return _BY_PREFIX[prefix]
    except KeyError:
        raise KeyError(
            f"row {row!r} has unknown prefix {prefix!r}; known: {', '.join(_BY_PREFIX)}"
        ) from None
