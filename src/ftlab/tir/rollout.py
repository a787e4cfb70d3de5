"""The multi-turn tool-integrated reasoning loop (SimpleTIR's agent loop, for evaluation and
GRPO rollouts alike): a port of run_llm_loop and execute_predictions
(recipe/simpletir/agent_utils.py at ltzheng/SimpleTIR e7b5b44).

One turn, at loop step `step` (0-based) of `max_turns`: the model continues its transcript;
a reply with a complete code block (```python ... ```) is cut after it, as
preceding_text.strip() + code_block.strip() (the rest is dropped); then
  - a reply with \\boxed{ anywhere (code included) ends the trajectory (stop "answer"),
  - a reply with a code block, tools on: the cell runs in the sandbox - also when the reply
    ended the trajectory with \\boxed{ - and its observation is
    "\\nCode execution result: <stdout>\\n", or with <the last line of stderr> instead when
    stderr is not empty (even when the cell succeeded), or "" when both are empty; output that
    contains \\boxed{ ends the trajectory (the cell printed the answer, e.g. final_answer()),
  - a reply with neither code nor \\boxed{ is a VOID turn: the trajectory stops there with
    observation "\\n" (SimpleTIR's no_tool_prompt; with mask_void_turns GRPO drops it from
    the policy loss);
  - at step max_turns - 2 a non-empty observation gets "\\n" appended (final_prompt), and at
    the last step (max_turns - 1) the observation is not appended to the transcript.
With tools off the loop is single-turn: one reply, kept whole (not cut after a code block:
SimpleTIR's tool_use False generates with generate_sequences, no post-processing), nothing
runs (the single-turn baseline); a reply without \\boxed{ stops as "no_tools", never "void"
(the void turn is the agent loop's, so mask_void_turns masks nothing there).
`max_context_tokens` stops a transcript that grew too long.

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
from ftlab.tir.sandbox import BOXED, CellResult, Sandbox

CODE_RE = re.compile(r"```(?:py|python)?\n(.*?)\n```", re.DOTALL)
_CUT_RE = re.compile(r"^(.*?)(```(?:py|python)?\n.*?\n```)", re.DOTALL)  # _postprocess_responses
OBS_PREFIX = "\nCode execution result: "
NO_TOOL_PROMPT = "\n"  # SimpleTIR prompt_dict["no_tool_prompt"]: a void turn's observation
FINAL_PROMPT = "\n"  # prompt_dict["final_prompt"]: appended at step max_turns - 2
STOP_REASONS = ("answer", "void", "max_turns", "length", "no_tools")


@dataclass
class Generated:
    """One reply of the model: its text and the number of tokens it generated."""

    text: str
    n_tokens: int


# A turn generator: full contexts (prompt + transcript so far) -> one reply each, in order.
TurnGenerator = Callable[[list[str]], list[Generated]]


def cut_after_code(text: str) -> str:
    """A reply with a complete code block becomes the text before it, stripped, followed by
    the block, stripped (the rest is dropped: SimpleTIR _postprocess_responses)."""
    m = _CUT_RE.search(text)
    return m.group(1).strip() + m.group(2).strip() if m else text


def find_code(text: str) -> str | None:
    m = CODE_RE.search(text)
    return m.group(1).strip() if m else None


def observation(result: CellResult) -> str:
    """What the model sees after its cell (SimpleTIR execute_predictions): stdout as printed
    (truncated), replaced by the last line of stderr whenever stderr is not empty, or nothing
    when the cell printed nothing."""
    if result.stderr:
        return f"{OBS_PREFIX}{result.stderr_last_line}\n"
    if result.stdout:
        return f"{OBS_PREFIX}{result.stdout}\n"
    return ""


def stop_reply(text: str) -> bool:
    """Whether a partial reply of a tools-on turn is complete: it closed a code block (the loop
    cuts it there; with tools off nothing stops a reply before EOS or the token budget).
    A closed \\boxed{...} does not stop it: SimpleTIR (and vLLM here) generate on to EOS or the
    token budget, so text after the answer - a code block included - stays in the reply."""
    return CODE_RE.search(text) is not None


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
    for step in range(turns):
        active = [t for t in trajs if not t.done]
        if not active:
            return
        start = time.perf_counter()
        replies = generate([t.context for t in active])
        if len(replies) != len(active):
            raise RuntimeError(f"generator returned {len(replies)} replies for {len(active)}")
        share = (time.perf_counter() - start) / len(active)  # batch time, split evenly
        last = step == turns - 1  # its observation is not appended (run_llm_loop)
        to_run = []
        for t, reply in zip(active, replies, strict=True):
            # tools off, SimpleTIR generates without the agent loop: the reply stays whole
            text = cut_after_code(reply.text) if tools else reply.text
            code = find_code(text)
            record = {
                "turn": step,
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
            if BOXED in text:  # anywhere, code included; a code block still runs
                t.stop_reason, t.answer = "answer", last_boxed(text)
            if not tools:  # no agent loop, so no void turn either (nothing masked in GRPO)
                if not t.done:
                    t.stop_reason = "no_tools"
            elif code is None:
                if not t.done:
                    record["void"] = True
                    t.stop_reason = "void"
                    _observe(record, NO_TOOL_PROMPT, step, turns, count)
            else:
                to_run.append((t, record, code))
        results = sandbox.run_many([c for _, _, c in to_run]) if to_run else []
        for (t, record, _), result in zip(to_run, results, strict=True):
            record["tool"] = result.to_dict()
            _observe(record, observation(result), step, turns, count)
            if result.stdout_has_boxed:  # the whole stdout, as SimpleTIR (not the truncated)
                t.stop_reason, t.answer = "answer", last_boxed(result.stdout)
        for t in active:
            if t.done:
                continue
            if last:
                t.stop_reason = "max_turns"
            elif max_context_tokens is not None and count(t.context) >= max_context_tokens:
                t.stop_reason = "length"


def _observe(record: dict, obs: str, step: int, turns: int, count) -> None:
    """Append a turn's observation as run_llm_loop does: final_prompt added to a non-empty
    one at step max_turns - 2, nothing appended at the last step."""
    if step == turns - 2 and obs:
        obs += FINAL_PROMPT
    if step == turns - 1:
        obs = ""
    record["observation"] = obs
    record["obs_tokens"] = count(obs) if obs else 0
