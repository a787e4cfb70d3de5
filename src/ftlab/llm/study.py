"""The matrix of an LLM post-training study (kind: llm): runs = methods x datasets x seeds.

Checkpoint steps are fixed by the config (max_steps, save_steps) so the whole DAG — every
checkpoint's evaluation included — is known before anything trains, and a dry run can show it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.kinds import StudyKind
from ftlab.study import saved_steps, selected_steps

METHODS = ("gt_sft", "teacher_sft", "grpo")
BASE = "base"  # the base model's name in the file contract (evaluated once, at "step" 0)
TINY = "tiny"  # base_model / teacher value that builds a tiny random model (CPU demos, tests)


@dataclass(frozen=True)
class RunSpec:
    name: str  # <method>-<dataset>_seed<S>, e.g. gt_sft-gsm8k_seed1
    method: str
    dataset: str
    fmt: str
    seed: int
    total_steps: int
    saved_steps: tuple[int, ...]
    eval_steps: tuple[int, ...]

    @property
    def final_step(self) -> int:
        return self.saved_steps[-1]

    @property
    def trainer(self) -> str:
        return "grpo" if self.method == "grpo" else "sft"


class LLMStudy:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.llm = cfg["llm"]
        self.seeds = tuple(cfg["seeds"])
        self.datasets: dict[str, dict] = dict(self.llm["datasets"])
        self.methods = tuple(m for m in METHODS if m in self.llm["methods"])
        self.runs: dict[str, RunSpec] = {}
        for seed in self.seeds:
            for dataset, spec in self.datasets.items():
                for method in self.methods:
                    run = self._run(method, dataset, spec["format"], seed)
                    self.runs[run.name] = run

    def _run(self, method: str, dataset: str, fmt: str, seed: int) -> RunSpec:
        hp = self.llm["grpo" if method == "grpo" else "sft"]
        saved = saved_steps(hp["max_steps"], hp["save_steps"])
        return RunSpec(
            name=f"{method}-{dataset}_seed{seed}",
            method=method,
            dataset=dataset,
            fmt=fmt,
            seed=seed,
            total_steps=hp["max_steps"],
            saved_steps=saved,
            eval_steps=selected_steps(saved, self.llm["checkpoints"]),
        )

    def run(self, name: str) -> RunSpec:
        try:
            return self.runs[name]
        except KeyError:
            raise KeyError(
                f"run {name!r} is not part of study {self.cfg['study']!r}; "
                f"known: {', '.join(self.runs)}"
            ) from None

    @property
    def tiny_base(self) -> bool:
        return self.llm["base_model"] == TINY

    def eval_points(self) -> list[tuple[str, int]]:
        """(model, step) of every evaluation: the base model once, then each run's checkpoints."""
        points = [(BASE, 0)]
        for run in self.runs.values():
            points += [(run.name, step) for step in run.eval_steps]
        return points

    def needs_teacher(self) -> bool:
        return "teacher_sft" in self.methods

    # -- the StudyKind interface (ftlab.kinds) ----------------------------------------------
    @property
    def units(self) -> dict[str, RunSpec]:
        return self.runs

    unit = run

    @property
    def teacher_is_tiny(self) -> bool:
        return self.llm["teacher"]["model"] == TINY

    def eval_outputs(self, layout, kind: str) -> list[str]:
        return [layout.path(kind, model=m, step=s) for m, s in self.eval_points()]

    def tables(self, layout) -> dict[str, str]:
        return {
            "forgetting": layout.forgetting_table,
            "summary": layout.forgetting_summary,
            "in_domain": layout.in_domain_table,
        }

    def plot_names(self) -> list[str]:
        plots = ["forgetting_summary"]
        for dataset in self.datasets:
            plots += [f"forgetting_{dataset}", f"in_domain_{dataset}"]
        return plots

    def targets(self, layout) -> list[str]:
        targets = [layout.path("model_dir", model=run) for run in self.runs]
        targets += self.eval_outputs(layout, "lm_eval_metrics")
        targets += self.eval_outputs(layout, "in_domain_metrics")
        if self.needs_teacher():
            targets += [layout.path("teacher_report", dataset=d) for d in self.datasets]
        targets += list(self.tables(layout).values())
        return targets + [layout.path("plot", plot=p) for p in self.plot_names()]

    def summary(self) -> str:
        return f"LLM study {self.cfg['study']!r}, {len(self.runs)} training runs"

    def plan(self) -> str:
        llm = self.llm
        seeds = list(self.seeds)
        lines = [f"LLM study {self.cfg['study']}: base {llm['base_model']}, seeds {seeds}"]
        lines.append(f"{'run':<28} {'trainer':<7} {'steps':>6}  evaluated checkpoints")
        for run in self.runs.values():
            lines.append(
                f"{run.name:<28} {run.trainer:<7} {run.total_steps:>6}  {list(run.eval_steps)}"
            )
        points = self.eval_points()
        lines.append(
            f"\n{len(self.runs)} training jobs, {len(points)} evaluation jobs (base model "
            f"included), each scoring {len(llm['benchmarks'])} benchmarks and "
            f"{len(self.datasets)} in-domain sets"
        )
        return "\n".join(lines)


def check_config(cfg: dict) -> list[str]:
    """Cross-key rules of an LLM study config that a JSON schema cannot express."""
    llm = cfg["llm"]
    problems = []
    if not llm["datasets"]:
        problems.append("'llm.datasets' is empty: name at least one training dataset")
    for name, spec in llm["datasets"].items():
        for split in ("train", "test"):
            if split not in spec:
                problems.append(f"'llm.datasets.{name}.{split}' is missing (a path or hub id)")
    if not llm["methods"]:
        problems.append("'llm.methods' is empty")
    if not llm["benchmarks"]:
        problems.append("'llm.benchmarks' is empty")
    return problems


KIND = StudyKind(
    name="llm",
    description="LLM post-training and forgetting (seed 003; seed 001's GRPO)",
    sections=("llm",),
    rule_files=("llm.smk", "llm_data.smk", "llm_train.smk", "llm_evaluate.smk", "llm_report.smk"),
    model_pattern=rf"{BASE}|({'|'.join(METHODS)})-[A-Za-z0-9]+_seed\d+",
    matrix=LLMStudy,
    check=check_config,
)
