"""The experiment matrix of a world-model study: which models exist, what each trains on,
which steps it saves and which of them are evaluated. Pure functions of the validated config,
so the Snakemake DAG (and a dry run) is known without touching any data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ftlab.kinds import StudyKind, lookup_unit

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

# The prompt task of each two-task model's representation probe, as the paper's configs
# (configs/revision/exp1/representation_extraction/pt1_seed{1,2,3}_ftwb2-k/<task>_firstcity_...):
# the FIRST task of its training pair in the paper's own order, which for 8 pairs is the
# second task of FTWB2_PAIRS above (e.g. ftwb2-8 = distance + angle probes with angle).
# Base models probe with distance, single-task models with their task.
FTWB2_PROBE_TASK = {
    1: "distance",
    2: "angle",
    3: "inside",
    4: "crossing",
    5: "trianglearea",
    6: "compass",
    7: "perimeter",
    8: "angle",
    9: "compass",
    10: "angle",
    11: "compass",
    12: "crossing",
    13: "distance",
    14: "crossing",
    15: "compass",
    16: "inside",
    17: "angle",
    18: "compass",
    19: "distance",
    20: "perimeter",
    21: "angle",
}


def probe_task_of(kind: str, trained: tuple[str, ...], mixture: str | None, tasks) -> str:
    """The task whose prefix prompts a model's representation probe (see FTWB2_PROBE_TASK)."""
    if kind == "base":
        return "distance" if "distance" in tasks else trained[0]
    if kind == "ftwb2":
        return FTWB2_PROBE_TASK[int(mixture.split("-")[1])]
    return trained[0]


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


def distinct_pair_problems(d: dict, section: str) -> list[str]:
    """Under split_overlap paper, no_atlantis distance draws distinct city pairs: more train +
    test rows than pairs of max_cities real cities cannot be drawn (the data job would stop
    after the study started; say it now)."""
    if d.get("split_overlap") != "paper" or "distance" not in d["tasks"] or not d["max_cities"]:
        return []
    n = d["max_cities"]
    need = d["pretrain_rows_per_task"] + d["test_rows_per_set"]
    if need <= n * (n - 1) // 2:
        return []
    return [
        f"'{section}.split_overlap' paper draws distinct city pairs for distance: "
        f"'{section}.pretrain_rows_per_task' + 'test_rows_per_set' = {need} rows exceed the "
        f"{n * (n - 1) // 2} pairs of '{section}.max_cities' {n}; use fewer rows, more cities "
        f"or '{section}.split_overlap: exclude'"
    ]


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
            probe_task=probe_task_of(kind, tuple(trained), mixture, self.tasks),
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
        return lookup_unit(self.models, name, "model", self.cfg["study"])

    def models_of(self, seed: int | None = None, kind: str | None = None) -> list[ModelSpec]:
        return [
            m
            for m in self.models.values()
            if (seed is None or m.seed == seed) and (kind is None or m.kind == kind)
        ]

    # -- the StudyKind interface (ftlab.kinds) ----------------------------------------------
    @property
    def units(self) -> dict[str, ModelSpec]:
        return self.models

    unit = model

    def eval_outputs(self, layout, name: str) -> list[str]:
        """The metrics file of each evaluation job of a model (one per evaluated step): what
        the tables and plots read; each holds every eval set of its checkpoint."""
        spec = self.model(name)
        return [layout.path("eval_metrics", model=name, step=step) for step in spec.eval_steps]

    def eval_targets(self, layout, name: str) -> list[str]:
        """Every file the evaluation jobs of a model write (metrics and samples per step):
        requested by rule all, so a deleted one is rebuilt."""
        spec = self.model(name)
        return [
            layout.path(pattern, model=name, step=step)
            for step in spec.eval_steps
            for pattern in ("eval_metrics", "eval_samples")
        ]

    def probe_output(self, layout, name: str) -> str:
        return layout.path("probe", model=name, step=self.model(name).final_step)

    def plot_names(self) -> list[str]:
        plots = []
        for seed in self.seeds:
            if self.models_of(seed, "ftwb1"):
                plots.append(f"seed{seed}_ftwb1_heatmap")
            if self.models_of(seed, "ftwb2"):
                plots += [f"seed{seed}_ftwb2_heatmap", f"seed{seed}_ftwb2_actual_minus_expected"]
        return plots + ["probes"]

    def targets(self, layout) -> list[str]:
        # Per-model outputs are requested directly so a deleted model/eval/probe is rebuilt
        # even while the aggregate tables downstream of it still exist.
        targets = [layout.path("model_dir", model=m) for m in self.models]
        for m in self.models:
            targets += self.eval_targets(layout, m)
            targets.append(self.probe_output(layout, m))
        targets += [
            layout.metrics_table,
            layout.normalized_table,
            layout.probes_table,
            layout.summary_table,
        ]
        return targets + [layout.path("plot", plot=p) for p in self.plot_names()]

    def summary(self) -> str:
        return f"world-model study {self.cfg['study']!r}, {len(self.models)} models"

    def plan(self) -> str:
        sets = self.eval_sets()
        lines = [f"study {self.cfg['study']}: seeds {list(self.seeds)}, tasks {list(self.tasks)}"]
        header = (
            f"{'model':<18} {'kind':<6} {'trained tasks':<26} {'rows':>9} {'steps':>7}  eval steps"
        )
        lines += [header, "-" * len(header)]
        n_evals = 0
        for m in self.models.values():
            n_evals += len(m.eval_steps) * len(sets)
            trained = "+".join(m.trained_tasks) if m.kind != "base" else "multitask"
            lines.append(
                f"{m.name:<18} {m.kind:<6} {trained:<26} {m.n_rows:>9} {m.total_steps:>7}  "
                f"{list(m.eval_steps)}"
            )
        lines.append(
            f"\n{len(self.models)} training jobs, {n_evals} per-set evaluation results "
            f"({len(sets)} sets per checkpoint), {len(self.models)} representation extractions"
        )
        return "\n".join(lines)


def check_config(cfg: dict) -> list[str]:
    """Cross-key rules of a world-model config that a JSON schema cannot express."""
    problems = []
    m = cfg["model"]
    if m["hidden"] % m["heads"]:
        problems.append(f"'model.hidden' ({m['hidden']}) must be divisible by 'model.heads'")
    if (m["hidden"] // m["heads"]) % 2:
        problems.append("'model.hidden' / 'model.heads' must be even (rotary embeddings)")
    rep_layer = cfg["representations"]["layer"]
    if rep_layer > m["layers"]:
        problems.append(
            f"'representations.layer' ({rep_layer}) exceeds 'model.layers' ({m['layers']})"
        )
    tasks = set(cfg["data"]["tasks"])
    ft = cfg["finetunes"]
    for i in [] if ft["ftwb1"] == "all" else ft["ftwb1"]:
        if FTWB1_TASKS[i] not in tasks:
            problems.append(f"'finetunes.ftwb1' lists {i} ({FTWB1_TASKS[i]}), not in 'data.tasks'")
    for k in [] if ft["ftwb2"] == "all" else ft["ftwb2"]:
        missing = [t for t in FTWB2_PAIRS[k] if t not in tasks]
        if missing:
            problems.append(
                f"'finetunes.ftwb2' lists {k} {FTWB2_PAIRS[k]}; {missing} not in 'data.tasks'"
            )
    d = cfg["data"]
    problems += distinct_pair_problems(d, "data")
    if d["finetune_no_atlantis_rows"] > d["pretrain_rows_per_task"]:
        problems.append(
            "'data.finetune_no_atlantis_rows' exceeds 'data.pretrain_rows_per_task' "
            "(fine-tuning draws its no_atlantis rows from the pretraining rows)"
        )
    problems += _strategy_problems(cfg)
    problems += one_process_problems(cfg, ("evaluate", "represent"), "the world-model study's")
    rows = cfg["eval"]["rows_per_set"]
    if rows is not None and rows > d["test_rows_per_set"]:
        problems.append(
            f"'eval.rows_per_set' ({rows}) exceeds "
            f"'data.test_rows_per_set' ({d['test_rows_per_set']})"
        )
    return problems


# Keys of a resources.<family> section that shape a launched (several-process) job.
LAUNCH_KEYS = {"nodes": 1, "tasks_per_node": 1, "processes": 1, "cpus_per_task": None}


def one_process_problems(cfg: dict, families: tuple[str, ...], what: str) -> list[str]:
    """Families whose rules run one process on one node and pass only gpus, mem_mb and runtime
    (threads set its CPUs): a launch key set there would be ignored, so it is an error."""
    problems = []
    for family in families:
        res = (cfg.get("resources") or {}).get(family) or {}
        for key, default in LAUNCH_KEYS.items():
            if res.get(key, default) != default:
                problems.append(
                    f"'resources.{family}.{key}' is {res[key]!r}, but {what} {family} jobs run "
                    "one process on one node (only gpus, mem_mb and runtime apply; 'threads' "
                    "sets their CPUs): remove it"
                )
    return problems


def launched_train_section(cfg: dict) -> dict | None:
    """resources.train when its training job runs several processes, else None (a shape no
    launcher can run is reported by the generic check, ftlab.config)."""
    from ftlab.launch import LaunchError, plan_for

    res = (cfg.get("resources") or {}).get("train")
    if res is None:
        return None
    try:
        return res if plan_for("train", res, cfg.get("threads", 1)).launched else None
    except LaunchError:
        return None


def _strategy_problems(cfg: dict) -> list[str]:
    """Several training processes run data parallel only (also refused by rules/train.smk;
    here so that `ftlab validate` and `ftlab submit` say it before Snakemake does)."""
    res = launched_train_section(cfg)
    if res is not None and res["strategy"] != "ddp":
        return [f"'resources.train.strategy' is {res['strategy']!r}: the world-model trainer "
                "runs data parallel only (strategy: ddp); its model fits one GPU"]  # fmt: skip
    return []


KIND = StudyKind(
    name="worldmodel",
    description="the seed-004 world-model study (C. F. Park, Convergent World Representations)",
    sections=(
        "data",
        "model",
        "pretrain",
        "finetune",
        "finetunes",
        "eval",
        "representations",
        "tables",
    ),
    rule_files=(
        "worldmodel.smk",
        "data.smk",
        "train.smk",
        "evaluate.smk",
        "represent.smk",
        "tables.smk",
        "plots.smk",
    ),
    model_pattern=r"(base|ftwb1-\d+|ftwb2-\d+)_seed\d+",
    matrix=Study,
    check=check_config,
    report_rules=("tables", "plot_ftwb_heatmap", "plot_actual_minus_expected", "plot_probes"),
)
