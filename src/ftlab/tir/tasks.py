"""Built-in arithmetic problems and tool-call traces (tests, CPU demos, the tiny base model).

`builtin:arith` problems are products of a 3-digit and a 2-digit number: too hard for a tiny
model to compute in its head after a short training, easy to copy into one Python call. The
traces are what SFT warm-starts the tiny model on (the tool-integrated one) or the baseline it
is compared with (the direct one).
"""

from __future__ import annotations

import random

from ftlab.tir.rollout import OBS_PREFIX

PLAIN_PROMPT = "Q: {question}\n"


def arith_problems(n: int, seed: int, prefix: str = "arith") -> list[dict]:
    """n distinct problems {id, question, answer} (answer as a string)."""
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        rows.append({"id": f"{prefix}-{seed}-{len(rows)}", "question": f"{a}*{b}",
                     "answer": str(a * b)})  # fmt: skip
    return rows


def tool_trace(question: str, answer: str) -> list[tuple[str, bool]]:
    """(segment, trained?) pieces of one tool-integrated solution: code, output, answer."""
    return [
        (f"```python\nprint({question})\n```", True),
        # the observation of print(): stdout with its newline (ftlab.tir.rollout.observation);
        # the sandbox's output is never a training target
        (f"{OBS_PREFIX}{answer}\n\n", False),
        (f"\\boxed{{{answer}}}", True),
    ]


def direct_trace(question: str, answer: str) -> list[tuple[str, bool]]:
    return [(f"\\boxed{{{answer}}}", True)]
