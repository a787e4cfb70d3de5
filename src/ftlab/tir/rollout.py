"""The multi-turn tool-integrated reasoning loop (SimpleTIR's agent loop, for evaluation and
GRPO rollouts alike).

One turn: the model continues its transcript; the reply is cut after its first complete code
block (```python ... ```, SimpleTIR's rule); then
  - a reply with \\boxed{...} outside its code block ends the trajectory with that answer
    (code in it is not run),
  - a reply with a code block, tools on: the cell runs in the sandbox and its output (or its
    one-line error) is appended as "Code execution result: ..." - the next turn continues,
    unless the output itself contains \\boxed{...} (the cell printed the final answer),
  - a reply with neither code nor an answer is a VOID turn: the trajectory stops there
    (SimpleTIR stops it too, and with mask_void_turns drops it from the policy loss).
With tools off the loop is single-turn: one reply, nothing runs (the single-turn baseline).
`max_turns` caps the model turns; `max_context_tokens` stops a transcript that grew too long.

Nothing here scores answers against the ground truth: the loop records everything (every
turn's text, code, sandbox result, observation, token counts and timing) and scoring reads it
back (ftlab.tir.scoring), so a scorer change never re-runs generation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ftlab.llm.data import last_boxed
from ftlab.tir.sandbox import CellResult, Sandbox

CODE_RE = re.compile(r"```(?:py|python)?\n(.*?)\n```", re.DOTALL)
BOXED = "\\boxed{"
OBS_PREFIX = "\nCode execution result: "
STOP_REASONS = ("answer", "void", "max_turns", "length", "no_tools")


@dataclass
class Generated:
    """One reply of the model: its text and the number of tokens it generated."""

    text: str
    n_tokens: int


# A turn generator: full contexts (prompt + transcript so far) -> one reply each, in order.
TurnGenerator = Callable[[list[str]], list[Generated]]


def cut_after_code(text: str) -> str:
    """The reply up to the end of its first complete code block (the rest is dropped)."""
    m = CODE_RE.search(text)
    return text[: m.end()] if m else text


def find_code(text: str) -> str | None:
    m = CODE_RE.search(text)
    return m.group(1).strip() if m else None


def observation(result: CellResult) -> str:
    """What the model sees after its cell: stdout, or the one-line error when it failed."""
    if result.ok:
        body = result.stdout.rstrip("\n")
    else:
        body = result.error or f"{result.status}"
    return f"{OBS_PREFIX}{body}\n"


def stop_reply(text: str) -> bool:
    """Whether a partial reply is complete: it closed a code block or a \\boxed{...}."""
    return CODE_RE.search(text) is not None or last_boxed(text) is not None


@dataclass
class Trajectory:
    problem_id: str
    sample: int
    prompt: str
    turns: list[dict] = field(default_factory=list)
    stop_reason: str | None = None
    answer: str | None = None  # \boxed{} content that ended the loop (raw; scoring re-extracts)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def transcript(self) -> str:
        return "".join(t["text"] + t["observation"] for t in self.turns)

    @property
    def context(self) -> str:
        return self.prompt + self.transcript

    def to_record(self) -> dict:
        turns = self.turns
        gen_s = sum(t["gen_seconds"] for t in turns)
        tool_s = sum(t["tool"]["wall_seconds"] for t in turns if t["tool"])
        return {
            "problem_id": self.problem_id,
            "sample": self.sample,
            "prompt": self.prompt,
            "turns": turns,
            "transcript": self.transcript,
            "stop_reason": self.stop_reason,
            "loop_answer": self.answer,
            "n_turns": len(turns),
            "n_code_cells": sum(t["code"] is not None for t in turns),
            "n_tool_calls": sum(t["tool"] is not None for t in turns),
            "n_void_turns": sum(t["void"] for t in turns),
            "gen_tokens": sum(t["gen_tokens"] for t in turns),
            "obs_tokens": sum(t["obs_tokens"] for t in turns),
            "gen_seconds": gen_s,
            "tool_seconds": tool_s,
            "seconds": gen_s + tool_s,
        }


def run_rollouts(
    problems: Sequence[dict],
    n: int,
    generate: TurnGenerator,
    sandbox: Sandbox | None,
    *,
    max_turns: int,
    tools: bool = True,
    count_tokens: Callable[[str], int] | None = None,
    max_context_tokens: int | None = None,
    batch_size: int | None = None,
) -> list[Trajectory]:
    """n trajectories per problem ({"id", "prompt"} each), problem-major order.

    Trajectories are generated in batches of `batch_size` (default: all at once), and within a
    batch every still-active trajectory takes its next turn together.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, not {max_turns}")
    if tools and sandbox is None:
        raise ValueError("tools are on but no sandbox was given")
    trajs = [Trajectory(str(p["id"]), i, p["prompt"]) for p in problems for i in range(n)]
    size = batch_size or len(trajs) or 1
    for lo in range(0, len(trajs), size):
        _run_batch(trajs[lo : lo + size], generate, sandbox, max_turns, tools, count_tokens,
                   max_context_tokens)  # fmt: skip
    return trajs


def _run_batch(trajs, generate, sandbox, max_turns, tools, count_tokens, max_context_tokens):
    count = count_tokens or (lambda s: 0)
    turns = max_turns if tools else 1
    for turn in range(turns):
        active = [t for t in trajs if not t.done]
        if not active:
            return
        start = time.perf_counter()
        replies = generate([t.context for t in active])
        if len(replies) != len(active):
            raise RuntimeError(f"generator returned {len(replies)} replies for {len(active)}")
        share = (time.perf_counter() - start) / len(active)  # batch time, split evenly
        to_run = []
        for t, reply in zip(active, replies, strict=True):
            text = cut_after_code(reply.text)
            code = find_code(text)
            prose = CODE_RE.sub("", text)  # a \boxed{} inside code is code, not an answer
            answer = last_boxed(prose) if BOXED in prose else None
            record = {
                "turn": turn,
                "text": text,
                "code": code,
                "tool": None,
                "observation": "",
                "void": False,
                "gen_tokens": reply.n_tokens,
                "obs_tokens": 0,
                "gen_seconds": share,
            }
            t.turns.append(record)
            if BOXED in prose:
                t.stop_reason, t.answer = "answer", answer
            elif code is None:
                record["void"] = True
                t.stop_reason = "void"
            elif not tools:
                t.stop_reason = "no_tools"
            else:
                to_run.append((t, record, code))
        results = sandbox.run_many([c for _, _, c in to_run]) if to_run else []
        for (t, record, _), result in zip(to_run, results, strict=True):
            obs = observation(result)
            record["tool"] = result.to_dict()
            record["observation"] = obs
            record["obs_tokens"] = count(obs)
            if BOXED in result.stdout:
                t.stop_reason, t.answer = "answer", last_boxed(result.stdout)
        for t in active:
            if t.done:
                continue
            if turn == turns - 1:
                t.stop_reason = "max_turns"
            elif max_context_tokens is not None and count(t.context) >= max_context_tokens:
                t.stop_reason = "length"
