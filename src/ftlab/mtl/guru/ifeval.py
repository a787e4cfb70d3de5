"""The instruction-following scorer ifeval (ood__ifeval).

Mirrors verl/utils/reward_score/ifeval/__init__.py @6133d10 (Reasoning360-MTL): the answer
is the text after the first </think> (up to a second one), else the whole text; each
instruction of extra_info["instruction_id_list"] is built from its kwargs in ground_truth
(None values dropped, floats made int, arrays made lists; instructions that take the prompt
get extra_info["prompt"]) and checked; the score is True only when the answer is not blank
and every check passes. Returns {"score": bool, "acc": bool}.

The instruction checks are lm-eval's (lm_eval/tasks/ifeval, the `llm` extra), not a copy:
the seed's instructions_util.py is the same code, and its instructions.py and
instructions_registry.py differ from lm-eval 0.4.13 only in typing, messages and
refactorings that return the same values, except RephraseChecker.strip_changes (greedy
`\\*.*\\*` in the seed, lazy in lm-eval), a class neither registry registers, so no
instruction id reaches it. Both draw unset thresholds from Python's global `random`, and
langdetect (language checks) is as random as in the seed unless its DetectorFactory.seed
is set. The sentence counts need nltk's punkt_tab data; without it (lm-eval downloads it
on import, which fails offline) they raise LookupError, here naming the instruction.
"""

from __future__ import annotations


def _registry() -> dict:
    try:
        from lm_eval.tasks.ifeval import instructions_registry
    except ImportError as err:
        raise ImportError(
            "the GURU ifeval scorer uses lm-eval's IFEval instructions: install ftlab's `llm` "
            "extra (lm-eval[ifeval])"
        ) from err
    return instructions_registry.INSTRUCTION_DICT


def _kwargs(raw: dict) -> dict:
    import numpy as np

    out = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = int(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()  # lists read from parquet
        out[key] = value
    return out


def compute_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    extra_info = extra_info or {}
    registry = _registry()
    answer = solution_str.split("</think>")[1] if "</think>" in solution_str else solution_str
    following = []
    for index, instruction_id in enumerate(extra_info["instruction_id_list"]):
        instruction = registry[instruction_id](instruction_id)
        instruction.build_description(**_kwargs(ground_truth[index]))
        args = instruction.get_instruction_args()
        if args and "prompt" in args:
            instruction.build_description(prompt=extra_info["prompt"])
        try:
            following.append(bool(answer.strip() and instruction.check_following(answer)))
        except LookupError as err:  # nltk data (punkt_tab for sentence counts) not installed
            raise LookupError(f"ifeval instruction {instruction_id!r}: {err}") from err
    return {"score": all(following), "acc": all(following)}
