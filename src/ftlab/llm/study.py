"""The matrix of an LLM post-training study (kind: llm): runs = methods x datasets x seeds.

Checkpoint steps are fixed by the config (max_steps, save_steps) so the whole DAG — every
checkpoint's evaluation included — is known before anything trains, and a dry run can show it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
