"""The matrix of a multi-task study (kind: mtl): runs = methods x seeds on one task mix.

Seed 000 trains the same recipe twice, baseline and PCGrad, with early stopping, evaluates
every kept checkpoint on a suite of tasks grouped into domains, and compares the methods.
Early stopping decides at run time which checkpoints exist, so a run's `saved_steps` here are
the PLANNED grid (every save_every_epochs epochs up to the maximum, the last included: what a
run that never stops early saves); the kept ones are listed by the run's mtl_manifest.json
(ftlab.mtl.world_train), which rules/mtl.smk reads through a Snakemake checkpoint.

Objectives: `world` (the seven geometry tasks with the project's trainer, CPU) and `sft` /
`grpo` (TRL, GPU; ftlab.mtl.trl). Steps per epoch are known before training: for world from
the rows per task, for sft/grpo from each training dataset's `limit_train` (epoch_steps: with
mtl.trl.batch_composition per_task, seed 000's min over tasks of its per-task loader's length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftlab.kinds import StudyKind, lookup_unit
from ftlab.mtl.early_stopping import save_epochs, validation_epochs
from ftlab.study import TASKS as WORLD_TASKS
from ftlab.study import launched_train_section, one_process_problems

# The methods ftlab.mtl.surgery.METHODS implements (a test keeps the two equal). Named here so
# that loading a config - which imports every kind - does not import torch (~1.3 s per
# Snakemake start, i.e. per SLURM job).
METHODS = ("baseline", "pcgrad")

OBJECTIVES = ("world", "sft", "grpo")


@dataclass(frozen=True)
class MTLRun:
    name: str  # <method>_seed<S>
    method: str
    seed: int
    steps_per_epoch: int
    saved_epochs: tuple[int, ...]  # planned: the run never stopping early
    validation_epochs: tuple[int, ...]

    @property
    def saved_steps(self) -> tuple[int, ...]:
        return tuple(e * self.steps_per_epoch for e in self.saved_epochs)

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """Planned: every checkpoint a full-length run keeps is evaluated (the kept ones of a
        finished run come from its manifest)."""
        return self.saved_steps

    @property
    def final_step(self) -> int:
        return self.saved_steps[-1]


def training_tasks(mtl: dict) -> list[str]:
    """Training tasks in config order (domains flattened)."""
    return [t for tasks in mtl["tasks"].values() for t in tasks]


def task_domains(groups: dict[str, list[str]]) -> dict[str, str]:
    return {t: d for d, tasks in groups.items() for t in tasks}


def world_data_tasks(mtl: dict) -> list[str]:
    """Geometry tasks whose splits a world study generates (trained or evaluated), in the
    project's task order."""
    used = set(training_tasks(mtl)) | set(task_domains(mtl["eval"]["suite"]))
    return [t for t in WORLD_TASKS if t in used]


def rows_per_step(mtl: dict, gpus: int) -> int:
    if mtl["objective"] == "world":
        return mtl["training"]["batch_size"]
    trl = mtl["trl"]
    rows = mtl["training"]["batch_size"] * trl["grad_accum"] * max(1, gpus)
    if mtl["objective"] == "grpo":  # a GRPO batch holds num_generations completions per prompt
        rows = max(1, rows // trl["num_generations"])
    return rows


def train_rows_per_task(mtl: dict) -> list[int]:
    """Planned training rows of each task, in training_tasks order."""
    if mtl["objective"] == "world":
        return [mtl["world"]["data"]["pretrain_rows_per_task"]] * len(training_tasks(mtl))
    # the last rows_per_task rows of each dataset validate (ftlab.mtl.steps.make_llm_mix)
    n_val = mtl["validation"]["rows_per_task"]
    return [(mtl["datasets"][t]["limit_train"] or 0) - n_val for t in training_tasks(mtl)]


def per_task_batches(mtl: dict) -> bool:
    """mtl.trl.batch_composition per_task (sft/grpo): every step draws from every task."""
    return mtl["objective"] != "world" and mtl["trl"]["batch_composition"] == "per_task"


def epoch_steps(mtl: dict, gpus: int, task_rows: list[int]) -> int:
    """Optimizer steps per epoch (task_rows: training rows of each task; the study plans them
    from the config, the trainer counts its dataset). per_task: seed 000's rule, the shortest
    task's drop_last loader (min over tasks of rows // its rows per step); shuffled: every row
    once, the last step partial."""
    per_step = rows_per_step(mtl, gpus)
    if per_task_batches(mtl):
        per_task = per_step // len(task_rows)
        return min(n // per_task for n in task_rows) if per_task else 0
    return max(1, math.ceil(sum(task_rows) / per_step))


class MTLStudy:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.mtl = mtl = cfg["mtl"]
        self.seeds = tuple(cfg["seeds"])
        self.objective = mtl["objective"]
        self.methods = tuple(mtl["methods"])
        self.tasks = training_tasks(mtl)
        self.suite = task_domains(mtl["eval"]["suite"])
        self.domains = list(mtl["eval"]["suite"])
        gpus = cfg["resources"]["train"]["gpus"]
        self.steps_per_epoch = max(1, epoch_steps(mtl, gpus, train_rows_per_task(mtl)))
        epochs = mtl["training"]["epochs"]
        v = mtl["validation"]
        self.runs: dict[str, MTLRun] = {}
        for seed in self.seeds:
            for method in self.methods:
                run = MTLRun(
                    name=f"{method}_seed{seed}",
                    method=method,
                    seed=seed,
                    steps_per_epoch=self.steps_per_epoch,
                    saved_epochs=tuple(
                        save_epochs(epochs, mtl["checkpoints"]["save_every_epochs"])
                    ),
                    validation_epochs=tuple(
                        validation_epochs(epochs, v["every_epochs"], v["before_training"])
                    ),
                )
                self.runs[run.name] = run
        self._dynamic_targets: list = []

    # -- the StudyKind interface (ftlab.kinds) ----------------------------------------------
    @property
    def units(self) -> dict[str, MTLRun]:
        return self.runs

    def unit(self, name: str) -> MTLRun:
        return lookup_unit(self.runs, name, "run", self.cfg["study"])

    def add_dynamic_targets(self, input_function) -> None:
        """rules/mtl.smk registers the input function that lists the evaluations of every
        KEPT checkpoint (read through the training checkpoint rule), so `rule all` requests
        them directly and a deleted one is rebuilt."""
        self._dynamic_targets.append(input_function)

    def report_outputs(self, layout) -> dict[str, str]:
        return {
            "scores": layout.mtl_scores_table,
            "comparison": layout.mtl_comparison_table,
            "evolution": layout.mtl_evolution_table,
            "plot": layout.path("plot", plot="mtl_evolution"),
            "markdown": layout.mtl_report,
        }

    def targets(self, layout) -> list:
        targets = [layout.path("model_dir", model=name) for name in self.runs]
        return targets + list(self.report_outputs(layout).values()) + self._dynamic_targets

    def summary(self) -> str:
        return (
            f"multi-task study {self.cfg['study']!r} ({self.objective}), {len(self.runs)} runs: "
            f"{', '.join(self.methods)} x {len(self.seeds)} seeds"
        )

    def _composition(self) -> str:
        if self.objective == "world":
            return ""
        per_step = rows_per_step(self.mtl, self.cfg["resources"]["train"]["gpus"])
        what = "prompts" if self.objective == "grpo" else "rows"
        if per_task_batches(self.mtl):
            return (f" of {per_step} {what} ({per_step // len(self.tasks)} of each task, "
                    "batch_composition per_task)")  # fmt: skip
        return f" of {per_step} {what} (tasks shuffled together)"

    def plan(self) -> str:
        mtl = self.mtl
        es = mtl["early_stopping"]
        lines = [
            f"multi-task study {self.cfg['study']}: objective {self.objective}, "
            f"seeds {list(self.seeds)}, {len(self.tasks)} training tasks in "
            f"{len(mtl['tasks'])} domains, eval suite {len(self.suite)} tasks in "
            f"{len(self.domains)} domains",
            f"up to {mtl['training']['epochs']} epochs x {self.steps_per_epoch} steps"
            f"{self._composition()}; validation "
            f"every {mtl['validation']['every_epochs']} epochs; early stopping "
            + (
                f"min {es['min_epochs']} epochs, patience {es['patience']} "
                f"{es.get('patience_unit', 'epochs')}, "
                f"min delta {es['min_delta']}, mode {es['mode']}"
                if es["enabled"]
                else "off"
            )
            + f"; keep last {mtl['checkpoints']['keep_last']}",
            f"{'run':<18} {'method':<9} validation epochs / checkpoint epochs (at most)",
        ]
        for run in self.runs.values():
            lines.append(
                f"{run.name:<18} {run.method:<9} {list(run.validation_epochs)} / "
                f"{list(run.saved_epochs)}"
            )
        most = sum(len(r.saved_epochs) for r in self.runs.values())
        lines.append(
            f"\n{len(self.runs)} training jobs; evaluation jobs follow training, one per kept "
            f"checkpoint (at most {most})"
        )
        return "\n".join(lines)


# data/mtl/<task>.jsonl holds one task's rows (ftlab.paths mtl_task_rows) beside the mixed
# data/mtl/train.jsonl and validation.jsonl: a task of those names would collide with them.
RESERVED_TASK_NAMES = frozenset({"train", "validation"})


def check_config(cfg: dict) -> list[str]:
    """Cross-key rules of a multi-task config that a JSON schema cannot express."""
    mtl = cfg["mtl"]
    problems = []
    tasks = training_tasks(mtl)
    if len(tasks) < 2:
        problems.append("'mtl.tasks' must name at least two training tasks (over all domains)")
    if len(set(tasks)) != len(tasks):
        problems.append("'mtl.tasks': a training task is listed in more than one domain")
    suite = [t for ts in mtl["eval"]["suite"].values() for t in ts]
    if not suite:
        problems.append("'mtl.eval.suite' is empty: name the evaluation tasks by domain")
    if len(set(suite)) != len(suite):
        problems.append("'mtl.eval.suite': a task is listed in more than one domain")
    if "baseline" not in mtl["methods"]:
        problems.append("'mtl.methods' must include 'baseline' (every method is compared to it)")
    for m in mtl["methods"]:
        if m not in METHODS:
            problems.append(f"'mtl.methods': unknown method {m!r} (known: {', '.join(METHODS)})")
    es, val = mtl["early_stopping"], mtl["validation"]
    if val["metric"] == "loss" and es["mode"] != "min":
        problems.append(
            "'mtl.early_stopping.mode' must be 'min' when 'mtl.validation.metric' is loss"
        )
    if val["metric"] == "score" and es["mode"] != "max":
        problems.append(
            "'mtl.early_stopping.mode' must be 'max' when 'mtl.validation.metric' is score"
        )
    if mtl["objective"] == "world" and mtl["eval"]["engine"] != "lm_eval":
        problems.append("'mtl.eval.engine' guru evaluates sft/grpo checkpoints; objective world "
                        "scores its geometry tasks itself (leave the engine unset)")  # fmt: skip
    if mtl["objective"] == "world":
        for key, names in (("mtl.tasks", tasks), ("mtl.eval.suite", suite)):
            bad = [t for t in names if t not in WORLD_TASKS]
            if bad:
                problems.append(
                    f"'{key}': {bad} are not geometry tasks (objective world: "
                    f"{', '.join(WORLD_TASKS)})"
                )
        from ftlab.study import distinct_pair_problems

        data = {**mtl["world"]["data"], "tasks": [*tasks, *suite]}
        problems += distinct_pair_problems(data, "mtl.world.data")
        m = mtl["world"]["model"]
        if m["hidden"] % m["heads"] or (m["hidden"] // m["heads"]) % 2:
            problems.append("'mtl.world.model.hidden' / 'heads' must be an even integer")
    else:
        if not mtl["base_model"]:
            problems.append(f"'mtl.base_model' must be set for objective {mtl['objective']}")
        for t in tasks:
            spec = mtl["datasets"].get(t)
            if spec is None:
                problems.append(f"'mtl.tasks' names {t!r}, which 'mtl.datasets' does not define")
            elif spec.get("limit_train") is None:
                problems.append(
                    f"'mtl.datasets.{t}.limit_train' must be set (it fixes the steps per epoch, "
                    "so the checkpoint grid is known before training)"
                )
        problems += _composition_problems(cfg, tasks)
        problems += _eval_engine_problems(mtl["eval"], suite)
    for t in sorted(set(tasks) & RESERVED_TASK_NAMES):
        problems.append(f"'mtl.tasks' names {t!r}, the name of the mixed {t} rows' file "
                        f"(data/mtl/{t}.jsonl): rename the task (mtl.datasets.{t})")  # fmt: skip
    problems += _launch_problems(cfg)
    problems += one_process_problems(cfg, ("evaluate",), "the multi-task study's")
    return problems


def _composition_problems(cfg: dict, tasks: list[str]) -> list[str]:
    """per_task batches: the same count of every task per step (seed 000: train_batch_size //
    tasks each; here the step's size is fixed, so it must be a multiple of the task count), and
    every task has that many training rows."""
    mtl = cfg["mtl"]
    if not per_task_batches(mtl) or any(
        mtl["datasets"].get(t, {}).get("limit_train") is None for t in tasks
    ):
        return []  # limit_train problems are reported above
    per_step = rows_per_step(mtl, cfg["resources"]["train"]["gpus"])
    what = "prompts" if mtl["objective"] == "grpo" else "rows"
    keys = "'mtl.training.batch_size' x 'mtl.trl.grad_accum' x 'resources.train.gpus'"
    if mtl["objective"] == "grpo":
        keys += " / 'mtl.trl.num_generations'"
    if per_step % len(tasks):
        return [
            f"'mtl.trl.batch_composition' per_task draws the same number of {what} from each of "
            f"the {len(tasks)} training tasks every step, but {keys} = {per_step} {what} per "
            f"step is not a multiple of {len(tasks)} (or set batch_composition: shuffled)"
        ]
    per_task = per_step // len(tasks)
    return [
        f"'mtl.datasets.{t}.limit_train' less 'mtl.validation.rows_per_task' leaves {n} "
        f"training rows, fewer than the {per_task} {what} per task of one step "
        "('mtl.trl.batch_composition' per_task)"
        for t, n in zip(tasks, train_rows_per_task(mtl), strict=True)
        if n < per_task
    ]


def _eval_engine_problems(e: dict, suite: list[str]) -> list[str]:
    if e["engine"] == "lm_eval":
        missing = [t for t in suite if t not in e["metrics"]]
        return [f"'mtl.eval.metrics' has no metric for {missing}"] if missing else []
    from ftlab.mtl.guru_eval import LEADERBOARDS, unknown_tasks

    problems = []
    unknown = unknown_tasks(suite)
    if unknown:
        problems.append(f"'mtl.eval.suite': {unknown} are not leaderboards of the guru engine "
                        f"(mtl.eval.engine guru; known: {', '.join(LEADERBOARDS)})")  # fmt: skip
    if e["metrics"]:
        problems.append("'mtl.eval.metrics' is set, but mtl.eval.engine guru scores every task "
                        "with its data source's scorer: remove it")  # fmt: skip
    several = [t for t in suite if t in LEADERBOARDS and LEADERBOARDS[t].n_samples > 1]
    if e["guru"]["temperature"] == 0 and several:
        # main_generation: assert n_samples == 1, "When temperature=0, n_samples must be 1."
        problems.append(f"'mtl.eval.guru.temperature' is 0 (greedy), but {several} sample "
                        "several responses per prompt (the seed's main_generation refuses "
                        "it)")  # fmt: skip
    return problems


def _launch_problems(cfg: dict) -> list[str]:
    """The training job's shape against the objective (also refused by rules/mtl_train.smk; here
    so that `ftlab validate` says it before Snakemake does)."""
    res = launched_train_section(cfg)
    if res is None:
        return []
    if cfg["mtl"]["objective"] == "world":
        return [
            "config keys 'resources.train.gpus' / 'processes' / 'nodes' ask for several "
            "processes, but mtl.objective world trains in one process: set them to 1"
        ]
    if res.get("strategy", "ddp") != "ddp":
        return [
            f"config key 'resources.train.strategy' is {res['strategy']!r}: multi-task "
            "sft/grpo runs data parallel only (strategy: ddp) - gradient surgery needs "
            "every task's full gradient in each process"
        ]
    return []


def preflight(cfg: dict) -> list[str]:
    """What would fail after GPUs were spent (`ftlab validate`; sft/grpo objectives): the base
    model's config loads, every training dataset source resolves, every lm-eval task of the
    suite loads (engine guru: every task's parquet is found and its data sources' scorers are
    ported)."""
    mtl = cfg["mtl"]
    if mtl["objective"] == "world":
        return []  # built from the config: nothing to fetch
    from ftlab.llm.preflight import (
        check_benchmarks,
        check_models,
        check_source_values,
        go_offline_if_unreachable,
    )  # fmt: skip

    go_offline_if_unreachable()
    values = [(f"mtl.datasets.{t}.train", spec["train"], spec["train_split"])
              for t, spec in mtl["datasets"].items()]  # fmt: skip
    problems = check_models({"mtl.base_model": mtl["base_model"]}) + check_source_values(
        values, mtl.get("data_root")
    )
    suite = task_domains(mtl["eval"]["suite"])
    if mtl["eval"]["engine"] == "guru":
        from ftlab.mtl.guru_eval import preflight_problems

        return problems + preflight_problems(mtl["eval"]["guru"]["data_folder"], list(suite))
    tasks = {t: mtl["eval"]["metrics"].get(t, "") for t in suite}
    lm_eval = mtl["eval"]["lm_eval"]
    return problems + check_benchmarks(tasks, lm_eval["include_path"],
                                       key="mtl.eval.lm_eval.include_path",
                                       tasks_key="mtl.eval.suite")  # fmt: skip


KIND = StudyKind(
    name="mtl",
    description="multi-task training, baseline vs gradient surgery (seed 000)",
    sections=("mtl",),
    rule_files=("mtl.smk", "mtl_data.smk", "mtl_train.smk", "mtl_evaluate.smk", "mtl_report.smk"),
    model_pattern=rf"({'|'.join(METHODS)})_seed\d+",
    matrix=MTLStudy,
    check=check_config,
    preflight=preflight,
)
