"""Multiple-choice STEM scorers: supergpqa (stem__supergpqa, stem__gpqa*) and gpqa (*no_box*).

Mirrors (Reasoning360-MTL @6133d10):
  verl/utils/reward_score/supergpqa.py  `supergpqa`: the last \\boxed{...} (two brace levels
      inside at most), else the text after the last "Final Answer:" / "The answer is:" up to a
      newline; the first of the letters A..J found in it (in alphabetical order, not in order
      of appearance) is the prediction. With no answer, or no letter in it, the prediction is
      a random letter A..J drawn from Python's global `random` (the seed's get_prediction), so
      such a response scores 1 with probability 1/10 when the truth is one of A..J: seed
      `random` to make it reproducible. Returns {"score": 1.0|0.0, "acc": 1.0|0}.
  verl/utils/reward_score/gpqa.py  `gpqa` (method 'strict', the seed's default): the first
      "Answer: X" (X in A..D, any case of "Answer", optional $ around X); {"score": 0, "acc": 0}
      without one, else 1./0. for both.
"""

from __future__ import annotations

import random
import re

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
_FINAL = re.compile(r"Final Answer:((?:[^<]|<[^<])*?)\n")
_THE_ANSWER = re.compile(r"The answer is:((?:[^<]|<[^<])*?)\n")
_STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>")
LETTERS = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]
_GPQA_STRICT = re.compile(r"(?i)Answer[ \t]*:[ \t]*\$?([A-D])\$?")


def _last_match(pattern: re.Pattern, text: str) -> str | None:
    matches = list(pattern.finditer(text))
    return matches[-1].group(1) if matches else None


def extract_solution(solution_str: str) -> str | None:
    if "<|im_start|>user" in solution_str:
        model_output = re.sub(
            r"^.*?<\|im_start\|>assistant",
            "<|im_start|>assistant",
            solution_str,
            flags=re.DOTALL,
            count=1,
        )
    elif "Assistant:" in solution_str:
        model_output = solution_str.split("Assistant:")[-1].strip()
    else:
        model_output = solution_str
    for stop_word in _STOP_WORDS:
        if stop_word in model_output:
            model_output = model_output.split(stop_word)[0].strip()
    boxed = _last_match(_BOXED, model_output)
    if boxed:  # an empty box falls through to "Final Answer:" (seed)
        return boxed
    final = _last_match(_FINAL, model_output)
    if final is not None:
        return final
    return _last_match(_THE_ANSWER, model_output)


def get_prediction(output: str) -> str:
    solution = extract_solution(output)
    if solution is not None:
        for option in LETTERS:
            if option in solution:
                return option
    return random.choice(LETTERS)  # the seed's guess for an answer without a letter


def supergpqa_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    if get_prediction(solution_str) == ground_truth:
        return {"score": 1.0, "acc": 1.0}
    return {"score": 0.0, "acc": 0}


def gpqa_extract(solution_str: str) -> str | None:
    match = _GPQA_STRICT.search(solution_str)
    return None if match is None else match.group(1)


def gpqa_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    answer = gpqa_extract(solution_str)
    if answer is None:
        return {"score": 0, "acc": 0}
    if answer == ground_truth:
        return {"score": 1.0, "acc": 1.0}
    return {"score": 0.0, "acc": 0.0}
