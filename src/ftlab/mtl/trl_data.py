"""Rows of the multi-task mix (ftlab.mtl.steps.make_llm_mix: normalized rows with a "task") as
TRL datasets with an integer "task_ids" column, the validation prompts, and the per-task
sampler of mtl.trl.batch_composition per_task.

Prompts and completions are the llm kind's (ftlab.llm.data): SFT trains on the ground-truth
solution in the reasoning style, GRPO samples completions of the reasoning prompt and is
rewarded by ftlab.llm.rewards (the row's format decides how answers are checked).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ftlab.mtl.trl import TASK_IDS

log = logging.getLogger("ftlab.mtl.trl")

STYLE = "reasoning"


def task_index(tasks: list[str]) -> dict[str, int]:
    return {t: i for i, t in enumerate(tasks)}


def _check_tasks(rows: list[dict], index: dict[str, int], what: str) -> None:
    bad = sorted({str(r.get("task")) for r in rows} - set(index))
    if bad:
        raise ValueError(f"{what}: rows of tasks {bad}, not of 'mtl.tasks' {sorted(index)}")


def sft_rows(rows: list[dict], tasks: list[str]) -> list[dict]:
    """prompt/completion records (loss on the completion) with their task_ids."""
    from ftlab.llm.data import sft_records

    index = task_index(tasks)
    _check_tasks(rows, index, "training rows")
    records = sft_records(rows, "gt", STYLE)
    return [{**rec, TASK_IDS: index[r["task"]]} for rec, r in zip(records, rows, strict=True)]


def grpo_rows(rows: list[dict], tasks: list[str], formats: dict[str, str], tokenizer,
              max_prompt_length: int) -> list[dict]:  # fmt: skip
    """GRPO prompts with the columns the rewards read, and their task (as "task": GRPO's
    dataloader hands raw rows to the scoring step, ftlab.mtl.trl)."""
    from ftlab.llm.train import grpo_dataset_rows

    _check_tasks(rows, task_index(tasks), "training rows")
    out = []
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            raise ValueError(f"'mtl.tasks': {task!r} has no training rows")
        kept = grpo_dataset_rows(mine, formats[task], tokenizer, max_prompt_length)
        out += [{**r, "task": task} for r in kept]
    return out


def validation_prompts(rows: list[dict], tasks: list[str]) -> list[dict]:
    """{prompt, task, row} per validation row, in file order."""
    from ftlab.llm.data import prompt_for

    _check_tasks(rows, task_index(tasks), "validation rows")
    return [{"prompt": prompt_for(r, STYLE), "task": r["task"], "row": r} for r in rows]


class PerTaskSampler(torch.utils.data.Sampler):
    """Seed 000's MTL batches (ray_trainer.py: one shuffled drop_last loader per task, batch
    train_batch_size // T, each restarting on its own when exhausted): every chunk (a GRPO
    generation batch, an SFT optimizer step) holds `per_task` rows of EVERY task.

    Task t's rows form an endless stream of permutations (permutation j drawn from (seed, t,
    j)), cut into per_task-row batches with the incomplete tail dropped; chunk s takes batch s
    of every task's stream, shuffled together (from (seed, s)). An epoch is `steps` chunks (the
    seed's min over tasks of len(loader)); set_epoch (the Trainer calls it through accelerate)
    picks chunks epoch x steps onwards, so a resumed run sees what the uninterrupted run saw.
    As TRL's RepeatSampler, each index is yielded mini_repeat_count times in a row (GRPO's
    num_generations) and each chunk repeat_count times (num_iterations x steps_per_generation);
    every process yields the same global order and accelerate gives each its batches.
    """

    def __init__(self, task_of_row: Sequence[int], n_tasks: int, per_task: int, steps: int,
                 seed: int, mini_repeat_count: int = 1, repeat_count: int = 1):  # fmt: skip
        self.rows = [[i for i, t in enumerate(task_of_row) if t == task] for task in range(n_tasks)]
        short = [t for t, rows in enumerate(self.rows) if len(rows) < per_task]
        if per_task < 1 or short:
            raise ValueError(
                f"per-task batches of {per_task} rows: tasks {short} have fewer training rows "
                f"({[len(self.rows[t]) for t in short]})"
            )
        self.per_task, self.steps, self.seed = per_task, steps, seed
        self.mini_repeat_count, self.repeat_count = mini_repeat_count, repeat_count
        self.epoch = 0
        self._perms: dict[int, tuple[int, list[int]]] = {}  # task -> (j, its permutation j)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def task_batch(self, task: int, step: int) -> list[int]:
        """Task's rows in chunk `step` (counted from the run's start)."""
        rows = self.rows[task]
        j, b = divmod(step, len(rows) // self.per_task)
        if self._perms.get(task, (None,))[0] != j:
            perm = np.random.default_rng([self.seed, 1, task, j]).permutation(len(rows))
            self._perms[task] = (j, [rows[i] for i in perm])
        return self._perms[task][1][b * self.per_task : (b + 1) * self.per_task]

    def chunk(self, step: int) -> list[int]:
        rows = [i for t in range(len(self.rows)) for i in self.task_batch(t, step)]
        order = np.random.default_rng([self.seed, 2, step]).permutation(len(rows))
        return [rows[i] for i in order]

    def __iter__(self) -> Iterator[int]:
        for step in range(self.epoch * self.steps, (self.epoch + 1) * self.steps):
            chunk = self.chunk(step)
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        per_chunk = len(self.rows) * self.per_task * self.mini_repeat_count * self.repeat_count
        return self.steps * per_chunk
