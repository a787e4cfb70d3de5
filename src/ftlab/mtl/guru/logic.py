"""Logic scorers: zebra_puzzle (logic__zebra_puzzle*) and arcagi (simulation__arcagi*, *barc*).

Mirrors (Reasoning360-MTL @6133d10):
  verl/utils/reward_score/zebra_puzzle.py  `zebra_puzzle`: the last <answer>...</answer> on
      one line (no DOTALL, as the seed) read as a Python literal, else as JSON; the score is
      the fraction of grid cells (ground_truth["rows"] x ground_truth["header"]) the answer's
      "rows" get right; 0 when the answer is no dict or any step fails. The whole scoring is
      under a 10 s SIGALRM limit (0 when it fires). Returns {"score": s, "acc": s}.
      Signals only reach the main thread; off it ftlab scores without the limit, where the
      seed would arm a process-wide timer and then fail (its SIGALRM kills the process later).
  verl/utils/reward_score/arcagi.py  `arcagi`: the last <answer>...</answer> (across lines),
      newlines dropped, "..." read as -1, the first "[[" ... "]]" read as a Python literal; a
      list of lists is the prediction, anything else [[0]]. Both grids are padded with -1 to
      the larger shape (rows of the prediction taken as a rectangle; ragged or non-integer
      rows become [[0]]); the score is 1.0 only when every cell matches and is not padding.
      Returns {"score": 1.0|0.0, "acc": same}. A prediction numpy cannot fit into the padded
      shape (e.g. a 3-level list) raises ValueError here as it does in the seed.
"""

from __future__ import annotations

import ast
import json
import re

from ftlab.mtl.guru import _limits

ZEBRA_SECONDS = 10.0
_ANSWER = re.compile(r"<answer>(.*?)</answer>")
_ANSWER_DOTALL = re.compile(r"<answer>(.*?)</answer>", flags=re.DOTALL)


class _ZebraTimeout(Exception):
    pass


def zebra_extract(solution_str: str):
    matches = list(_ANSWER.finditer(solution_str))
    if not matches:
        return None
    final_answer = matches[-1].group(1).strip()
    try:
        return ast.literal_eval(final_answer)
    except (SyntaxError, ValueError):
        try:
            return json.loads(final_answer)
        except json.JSONDecodeError:
            return None
    except Exception:  # noqa: BLE001 - e.g. an unhashable dict key: no answer (seed)
        return None


def zebra_accuracy(answer, ground_truth) -> float:
    """Fraction of the truth's cells the answer matches (0 for an answer that is no dict)."""
    if not isinstance(answer, dict):
        return 0
    num_rows = len(ground_truth["rows"])
    num_cols = len(ground_truth["header"])
    correct = 0
    for i in range(num_rows):
        for j in range(num_cols):
            if answer["rows"][i][j] == ground_truth["rows"][i][j]:
                correct += 1
    return correct / (num_rows * num_cols)


def _zebra(solution_str, ground_truth):
    predicted = zebra_extract(solution_str)
    if predicted is None:
        return 0.0
    try:
        return zebra_accuracy(predicted, ground_truth)
    except Exception:  # noqa: BLE001 - a malformed answer scores 0 (seed)
        return 0.0


def zebra_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    try:
        if _limits.in_main_thread():
            with _limits.alarm(ZEBRA_SECONDS, _ZebraTimeout):
                score = _zebra(solution_str, ground_truth)
        else:
            score = _zebra(solution_str, ground_truth)
    except Exception:  # noqa: BLE001 - timeouts and anything else score 0 (seed)
        score = 0.0
    return {"score": score, "acc": score}


def arcagi_extract(solution_str: str) -> list:
    matches = list(_ANSWER_DOTALL.finditer(solution_str))
    if not matches:
        return [[0]]
    final_answer = matches[-1].group(1).strip().replace("\n", "").replace("...", "-1")
    try:
        start = final_answer.index("[[")
        end = final_answer.index("]]", start) + 2
        array = ast.literal_eval(final_answer[start:end])
        if all(isinstance(i, list) for i in array):
            return array
        return [[0]]
    except Exception:  # noqa: BLE001 - no readable grid: [[0]] (seed)
        return [[0]]


def _pad(array, target_shape: tuple[int, int], pad_value: int):
    import numpy as np

    padded = np.full(target_shape, pad_value, dtype=int)
    try:
        array = np.stack(array).astype(int)
    except Exception:  # noqa: BLE001 - ragged or non-numeric grid: [[0]] (seed)
        array = np.array([[0]])
    rows, cols = array.shape[0], array.shape[1]
    padded[:rows, :cols] = array
    return padded


def compare_grids(generated, correct, pad_value: int = -1) -> tuple[float, float]:
    import numpy as np

    max_rows = max(len(generated), len(correct))
    max_cols = max(len(generated[0]), len(correct[0]))
    shape = (max_rows, max_cols)
    padded_generated = _pad(generated, shape, pad_value)
    padded_correct = _pad(correct, shape, pad_value)
    total = max_rows * max_cols
    matched = np.sum(
        (padded_generated == padded_correct)
        & (padded_generated != pad_value)
        & (padded_correct != pad_value)
    )
    return float(matched == total), matched / total


def arcagi_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    is_correct, _ = compare_grids(arcagi_extract(str(solution_str)), ground_truth)
    return {"score": is_correct, "acc": is_correct}
