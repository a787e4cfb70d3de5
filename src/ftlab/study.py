"""The experiment matrix of a world-model study: which models exist, what each trains on,
which steps it saves and which of them are evaluated. Pure functions of the validated config,
so the Snakemake DAG (and a dry run) is known without touching any data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TASKS = ("distance", "trianglearea", "angle", "compass", "inside", "perimeter", "crossing")
VARIANTS = ("no_atlantis", "atlantis_required")
MULTITASK = "multitask"

# The design doc's numbering (ftwb1-1..7, ftwb2-1..21).
FTWB1_TASKS = {i + 1: t for i, t in enumerate(TASKS)}
FTWB2_PAIRS = {
    1: ("distance", "trianglearea"),
    2: ("angle", "compass"),
    3: ("inside", "perimeter"),
    4: ("crossing", "distance"),
    5: ("trianglearea", "angle"),
    6: ("compass", "inside"),
    7: ("perimeter", "crossing"),
    8: ("distance", "angle"),
    9: ("trianglearea", "compass"),
    10: ("angle", "inside"),
    11: ("compass", "perimeter"),
    12: ("inside", "crossing"),
    13: ("perimeter", "distance"),
    14: ("crossing", "trianglearea"),
    15: ("distance", "compass"),
    16: ("trianglearea", "inside"),
    17: ("angle", "perimeter"),
    18: ("compass", "crossing"),
    19: ("inside", "distance"),
    20: ("perimeter", "trianglearea"),
    21: ("crossing", "angle"),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # base_seed1, ftwb1-3_seed1, ftwb2-12_seed2
    seed: int
    kind: str  # base | ftwb1 | ftwb2
    trained_tasks: tuple[str, ...]  # base: every study task
    mixture: str | None  # data/mixtures/<mixture>; None = the multitask pretraining set
    init_from: str | None  # model whose final checkpoint this one starts from
    n_rows: int
    total_steps: int
    saved_steps: tuple[int, ...]
    eval_steps: tuple[int, ...]
    probe_task: str  # task whose prefix prompts the representation extraction
    training: dict = field(hash=False, compare=False, repr=False)

    @property
    def final_step(self) -> int:
        return self.saved_steps[-1]


def total_steps(n_rows: int, training: dict) -> int:
    steps = max(1, math.ceil(training["epochs"] * math.ceil(n_rows / training["batch_size"])))
    if training["max_steps"] is not None:
        steps = min(steps, training["max_steps"])
    return steps


def saved_steps(total: int, save_every: int) -> tuple[int, ...]:
    steps = list(range(save_every, total, save_every))
    return tuple(steps + [total])


def selected_steps(saved: tuple[int, ...], rule: str | int) -> tuple[int, ...]:
    """`last`, `all`, or every k-th saved checkpoint (the last one always included)."""
    if rule == "last":
        return (saved[-1],)
    if rule == "all":
        return saved
    picked = list(saved[rule - 1 :: rule])
    if not picked or picked[-1] != saved[-1]:
        picked.append(saved[-1])
    return tuple(picked)


def mixture_tasks(mixture: str) -> tuple[str, ...]:
    kind, index = mixture.split("-")
    return (FTWB1_TASKS[int(index)],) if kind == "ftwb1" else FTWB2_PAIRS[int(index)]


def mixture_rows(cfg: dict, n_trained: int) -> int:
    d = cfg["data"]
    per_task = d["finetune_no_atlantis_rows"] + d["finetune_atlantis_rows"]
    return per_task * n_trained + d["elicitation_rows"] * len(d["tasks"])


class Study:
    """The models of a study and the sets they are evaluated on."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.tasks: tuple[str, ...] = tuple(t for t in TASKS if t in cfg["data"]["tasks"])
        self.seeds: tuple[int, ...] = tuple(cfg["seeds"])
        self.models: dict[str, ModelSpec] = {}
        for seed in self.seeds:
            for spec in self._models_for_seed(seed):
                self.models[spec.name] = spec

    # -- matrix ---------------------------------------------------------------------------
    def ftwb1_indices(self) -> list[int]:
        chosen = self.cfg["finetunes"]["ftwb1"]
        pool = [i for i, t in FTWB1_TASKS.items() if t in self.tasks]
        return pool if chosen == "all" else sorted(chosen)

    def ftwb2_indices(self) -> list[int]:
        chosen = self.cfg["finetunes"]["ftwb2"]
        pool = [k for k, pair in FTWB2_PAIRS.items() if all(t in self.tasks for t in pair)]
        return pool if chosen == "all" else sorted(chosen)

    def mixtures(self) -> list[str]:
        return [f"ftwb1-{i}" for i in self.ftwb1_indices()] + [
            f"ftwb2-{k}" for k in self.ftwb2_indices()
        ]

    def _spec(self, name, seed, kind, trained, mixture, init_from, n_rows, training):
        total = total_steps(n_rows, training)
        saved = saved_steps(total, training["save_every"])
        return ModelSpec(
            name=name,
            seed=seed,
            kind=kind,
            trained_tasks=tuple(trained),
            mixture=mixture,
            init_from=init_from,
            n_rows=n_rows,
            total_steps=total,
            saved_steps=saved,
            eval_steps=selected_steps(saved, self.cfg["eval"]["checkpoints"]),
            probe_task="distance" if kind == "base" and "distance" in self.tasks else trained[0],
            training=training,
        )

    def _models_for_seed(self, seed: int):
        cfg = self.cfg
        base = f"base_seed{seed}"
        n_base = cfg["data"]["pretrain_rows_per_task"] * len(self.tasks)
        yield self._spec(base, seed, "base", self.tasks, None, None, n_base, cfg["pretrain"])
        for mixture in self.mixtures():
            kind = mixture.split("-")[0]
            trained = mixture_tasks(mixture)
            n_rows = mixture_rows(cfg, len(trained))
            name = f"{mixture}_seed{seed}"
            yield self._spec(name, seed, kind, trained, mixture, base, n_rows, cfg["finetune"])

    # -- eval sets ------------------------------------------------------------------------
    def eval_sets(self) -> list[str]:
        sets = [f"{t}__{v}" for t in self.tasks for v in VARIANTS]
        return sets + [f"{MULTITASK}__no_atlantis"]

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(
                f"model {name!r} is not part of study {self.cfg['study']!r}; "
                f"known: {', '.join(self.models)}"
            ) from None

    def models_of(self, seed: int | None = None, kind: str | None = None) -> list[ModelSpec]:
        return [
            m
            for m in self.models.values()
            if (seed is None or m.seed == seed) and (kind is None or m.kind == kind)
        ]
