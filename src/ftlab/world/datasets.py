"""Datasets of rows (design doc, "Datasets per task"): per task and variant a test and a train
split, the shuffled multitask mix and the fine-tuning mixtures. Rows carry no bos/eos; files are
jsonl with one ``{"text": row}`` per line.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from ftlab.study import TASKS as TASK_ORDER
from ftlab.study import VARIANTS
from ftlab.world.tasks import CityPool, get_task

# Rows are generated in chunks of this fixed size from their own random stream, so a split is a
# prefix of any larger split with the same seed (growing n_train keeps the earlier rows).
CHUNK = 4096
MAX_IDLE_CHUNKS = 50  # consecutive chunks without a usable row before giving up


def derive_seed(seed: int, *names: str) -> int:
    """A stable 63-bit seed for (seed, *names): sha256, independent of PYTHONHASHSEED."""
    blob = json.dumps([int(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def _stream(task, pool: CityPool, require_atlantis: bool, seed: int, first=CHUNK, options=None):
    """Endless chunks of rows from one random stream: ``first`` rows, then CHUNK-row chunks."""
    rng = np.random.default_rng(seed)
    size = max(1, first)
    while True:
        yield task.sample_batch(rng, pool, require_atlantis, size, **(options or {}))
        size = CHUNK


def _take(chunks, n: int, exclude: set, what: str, key=None) -> list[str]:
    """The first ``n`` rows of ``chunks`` whose key is not in ``exclude``. ``key=None``: a row is
    its own key and rows may repeat. With ``key``, a taken row's key joins ``exclude``, so no two
    taken rows (nor a row and an excluded one) share a key: a draw without replacement."""
    rows: list[str] = []
    idle = 0
    while len(rows) < n:
        fresh = []
        for r in next(chunks):
            k = r if key is None else key(r)
            if k in exclude:
                continue
            if key is not None:
                exclude.add(k)
            fresh.append(r)
            if len(rows) + len(fresh) == n:
                break
        idle = 0 if fresh else idle + 1
        if idle >= MAX_IDLE_CHUNKS:
            raise RuntimeError(
                f"{what}: {MAX_IDLE_CHUNKS} chunks of {CHUNK} rows in a row held no usable row "
                "(each repeated a test row, or an earlier pair); the city set is too small for "
                "this many distinct rows"
            )
        rows.extend(fresh)
    return rows


# data.split_overlap: how a train split may share rows with its test split.
SPLIT_OVERLAPS = ("paper", "exclude")


def _unordered_pair(row: str) -> tuple[str, str]:
    """The two city ids of a distance row ``dist(a,b)=d``, sorted: (a, b) and (b, a) are one."""
    a, b = row[row.index("(") + 1 : row.index(")")].split(",")
    return (a, b) if a <= b else (b, a)


def _paper_draws_without_replacement(task: str, variant: str) -> bool:
    """The one split the paper draws as ONE sample without replacement, then cuts into
    train/val/test (tasks/distance.py, generate_pairs -> utils.py generate_within_group_pairs:
    np.random.choice over the upper triangle of the non-Atlantis cities, replace=False, then a
    random swap). Every other (task, variant) draws with replacement: trianglearea and angle
    cut one draw made with np.random.randint / choice(replace=True), atlantis_required pairs
    come from generate_must_include_pairs (a loop of independent choices), and compass,
    inside, crossing and perimeter draw each split separately (seed += 1)."""
    return task == "distance" and variant == "no_atlantis"


def make_task_splits(
    cities: pd.DataFrame,
    task: str,
    variant: str,
    n_train: int,
    n_test: int,
    seed: int,
    task_options: dict | None = None,
    split_overlap: str = "paper",
) -> dict[str, list[str]]:
    """{"train": n_train rows, "test": n_test rows} of one task and variant.

    The test rows are drawn first, as ONE batch of n_test rows (so ``inside``'s paper sampler
    fills exact TRUE/FALSE quotas over the whole test set, as the paper's generator does per
    split); train rows come in chunks of CHUNK rows (exact quotas per chunk). Each split has its
    own stream derived from (seed, task, variant), so the test set does not depend on n_train
    and a train split is a prefix of any larger one. ``task_options``: study-wide task options
    (``ftlab.world.tasks.TASK_OPTIONS``, e.g. inside_sampler).

    ``split_overlap`` (config data.split_overlap):

    - ``"paper"``: the paper's rule per task and variant. no_atlantis distance is one draw of
      distinct unordered pairs (no pair twice in either order, within or across the splits);
      every other task and variant draws with replacement, so train may repeat test rows and
      itself, as the paper's independent draws do.
    - ``"exclude"`` (an ftlab option): a train row never equals a test row (the reversed pair
      of a distance test row may still be a train row); duplicates within a split are allowed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_test={n_test}")
    if split_overlap not in SPLIT_OVERLAPS:
        raise ValueError(f"data.split_overlap: unknown {split_overlap!r}; known: {SPLIT_OVERLAPS}")
    t = get_task(task)
    pool = CityPool.from_frame(cities)
    req = variant == "atlantis_required"
    what = f"{task}/{variant}"
    opts = dict(task_options or {})
    distinct = split_overlap == "paper" and _paper_draws_without_replacement(task, variant)
    if distinct:
        n_real = len(pool.real_idx)
        if n_train + n_test > n_real * (n_real - 1) // 2:
            raise ValueError(
                f"{what}: data.split_overlap paper draws distinct city pairs, and "
                f"{n_train} train + {n_test} test rows exceed the {n_real * (n_real - 1) // 2} "
                f"pairs of {n_real} real cities; use fewer rows, more cities or "
                "data.split_overlap: exclude"
            )
    key = _unordered_pair if distinct else None
    test_chunks = _stream(t, pool, req, derive_seed(seed, task, variant, "test"), n_test, opts)
    taken: set = set()  # with ``key``: the pairs drawn so far, none may be drawn again
    test = _take(test_chunks, n_test, taken, what, key)
    train_chunks = _stream(t, pool, req, derive_seed(seed, task, variant, "train"), CHUNK, opts)
    if split_overlap == "exclude":
        train = _take(train_chunks, n_train, set(test), what)
    else:
        train = _take(train_chunks, n_train, taken, what, key)
    return {"train": train, "test": test}


def _shuffled(rows: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order.tolist()]


def _canonical(tasks) -> list[str]:
    """Tasks in ftlab.study.TASKS order, so results do not depend on dict insertion order."""
    for t in tasks:
        get_task(t)  # KeyError listing the known tasks
    return sorted(tasks, key=TASK_ORDER.index)


def make_multitask(rows_by_task: dict[str, list[str]], seed: int) -> list[str]:
    """All rows of all tasks, concatenated in canonical task order and shuffled."""
    rows = [r for t in _canonical(rows_by_task) for r in rows_by_task[t]]
    return _shuffled(rows, derive_seed(seed, "multitask"))


ELICITATIONS = ("paper", "disjoint")  # config: data.elicitation_source


def make_mixture(
    trained_tasks,
    no_atlantis_train: dict[str, list[str]],
    atlantis_train: dict[str, list[str]],
    n_no_atlantis: int,
    n_atlantis: int,
    n_elicitation: int,
    seed: int,
    elicitation: str = "paper",
) -> list[str]:
    """A fine-tuning mixture (ftwb1 / ftwb2), shuffled.

    Per trained task: the FIRST ``n_no_atlantis`` no_atlantis train rows and the FIRST
    ``n_atlantis`` atlantis_required train rows. Per task of ``atlantis_train`` (all study
    tasks), ``n_elicitation`` atlantis_required train rows ("elicitation" rows):

    - ``elicitation="paper"`` (the paper's combine_datasets.py, mode sample: each listed
      dataset draws np.random.choice(train_size, n, replace=False) from its train split): a
      seeded sample without replacement of the first max(n_atlantis, n_elicitation) rows, so
      a trained task's elicitation rows repeat rows it already trains on;
    - ``"disjoint"`` (an ftlab option): the LAST ``n_elicitation`` rows, disjoint from the
      first ``n_atlantis`` because those splits then hold ``n_atlantis + n_elicitation`` rows.
    """
    if elicitation not in ELICITATIONS:
        raise ValueError(f"data.elicitation_source: unknown {elicitation!r}; known: {ELICITATIONS}")
    disjoint = elicitation == "disjoint"
    trained = list(trained_tasks)
    if not trained or len(set(trained)) != len(trained):
        raise ValueError(f"trained_tasks must be non-empty and distinct, got {trained}")
    if min(n_no_atlantis, n_atlantis, n_elicitation) < 0:
        raise ValueError("row counts must be >= 0")
    rows: list[str] = []
    for t in _canonical(trained):
        if t not in no_atlantis_train or t not in atlantis_train:
            raise ValueError(f"mixture: trained task {t!r} needs no_atlantis and atlantis rows")
        na, atl = no_atlantis_train[t], atlantis_train[t]
        if len(na) < n_no_atlantis:
            raise ValueError(
                f"mixture: {t} has {len(na)} no_atlantis train rows, {n_no_atlantis} needed"
            )
        if len(atl) < n_atlantis + (n_elicitation if disjoint else 0):
            need = (
                f"{n_atlantis} fine-tuning + {n_elicitation} elicitation rows must not overlap"
                if disjoint
                else f"{n_atlantis} fine-tuning rows needed"
            )
            raise ValueError(f"mixture: {t} has {len(atl)} atlantis_required train rows; {need}")
        rows += na[:n_no_atlantis] + atl[:n_atlantis]
    for t in _canonical(atlantis_train):
        atl = atlantis_train[t]
        if len(atl) < n_elicitation:
            raise ValueError(
                f"mixture: {t} has {len(atl)} atlantis_required train rows, "
                f"{n_elicitation} elicitation rows needed"
            )
        if disjoint:
            rows += atl[len(atl) - n_elicitation :]  # not atl[-n:]: everything for n = 0
        else:
            source = min(len(atl), max(n_atlantis, n_elicitation))
            pick = np.random.default_rng(derive_seed(seed, "elicitation", t)).choice(
                source, size=n_elicitation, replace=False
            )
            rows += [atl[i] for i in pick.tolist()]
    return _shuffled(rows, derive_seed(seed, "mixture", *_canonical(trained)))
