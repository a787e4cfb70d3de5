"""Rows of the multi-task mix (ftlab.mtl.steps.make_llm_mix: normalized rows with a "task") as
TRL datasets with an integer "task_ids" column, and the validation prompts.

Prompts and completions are the llm kind's (ftlab.llm.data): SFT trains on the ground-truth
solution in the reasoning style, GRPO samples completions of the reasoning prompt and is
rewarded by ftlab.llm.rewards (the row's format decides how answers are checked).
"""

from __future__ import annotations

import logging

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
