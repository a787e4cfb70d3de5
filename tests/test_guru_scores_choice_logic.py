"""ftlab.mtl.guru: STEM multiple choice (supergpqa, gpqa) and logic (zebra_puzzle, arcagi).

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
supergpqa.py, gpqa.py, zebra_puzzle.py, arcagi.py; the reason is given with each case.
"""

import json
import random
import time

import numpy as np
import pytest

from ftlab.mtl import guru
from ftlab.mtl.guru import logic

# ---- supergpqa (stem__supergpqa*, stem__gpqa* without no_box) --------------------------------

SUPERGPQA = [
    (r"so \boxed{B}", "B", {"score": 1.0, "acc": 1.0}),
    (r"so \boxed{C}", "B", {"score": 0.0, "acc": 0}),
    # the first letter in alphabetical order that occurs, not the first in the text
    (r"\boxed{J or A}", "A", {"score": 1.0, "acc": 1.0}),
    # the last box; two brace levels inside it are allowed
    (r"\boxed{A} then \boxed{\text{\textbf{C}}}", "C", {"score": 1.0, "acc": 1.0}),
    # no box: "Final Answer:" up to a newline
    ("Final Answer: D\n", "D", {"score": 1.0, "acc": 1.0}),
    ("The answer is: E\n", "E", {"score": 1.0, "acc": 1.0}),
    # text after a stop word is dropped
    (r"\boxed{A}<|im_end|>\boxed{B}", "A", {"score": 1.0, "acc": 1.0}),
    # only the assistant's turn counts
    (r"<|im_start|>user \boxed{A}<|im_start|>assistant \boxed{B}", "A", {"score": 0.0, "acc": 0}),
    ("Assistant: \\boxed{A} Assistant: \\boxed{G}", "G", {"score": 1.0, "acc": 1.0}),
]


@pytest.mark.parametrize(("solution", "truth", "expected"), SUPERGPQA)
@pytest.mark.parametrize("source", ["stem__supergpqa", "stem__gpqa_diamond"])
def test_supergpqa(source, solution, truth, expected):
    assert guru.compute_score(source, solution, truth) == expected


@pytest.fixture
def global_random():
    """The seed's guess uses Python's global random: its state is put back after the test."""
    state = random.getstate()
    yield
    random.setstate(state)


@pytest.mark.parametrize(
    "solution",
    [r"\boxed{b}", "Final Answer: D", "nothing here", r"\boxed{}", r"\boxed{{{{C}}}}"],
)
def test_supergpqa_guesses_without_a_letter(solution, global_random):
    # no uppercase letter A..J found (lower case, no newline after "Final Answer:", an empty
    # box, braces nested too deep for the pattern): the seed draws random.choice(A..J)
    random.seed(11)
    guess = random.choice("ABCDEFGHIJ")
    random.seed(11)
    assert guru.compute_score("stem__supergpqa", solution, guess)["score"] == 1.0
    random.seed(11)
    other = "A" if guess != "A" else "B"
    assert guru.compute_score("stem__supergpqa", solution, other)["score"] == 0.0


GPQA = [
    ("Answer: B", "B", {"score": 1.0, "acc": 1.0}),
    ("answer :\t$C$", "C", {"score": 1.0, "acc": 1.0}),
    # the first match wins
    ("Answer: A ... Answer: B", "B", {"score": 0.0, "acc": 0.0}),
    # (?i) covers the letter too: "c" is extracted and is not "C"
    ("Answer: c", "C", {"score": 0.0, "acc": 0.0}),
    # no "Answer:" (a box does not count): int zeros
    (r"\boxed{B}", "B", {"score": 0, "acc": 0}),
    ("Answer: E", "E", {"score": 0, "acc": 0}),
]


@pytest.mark.parametrize(("solution", "truth", "expected"), GPQA)
def test_gpqa_no_box(solution, truth, expected):
    result = guru.compute_score("stem__gpqa_diamond_no_box", solution, truth)
    assert result == expected
    assert [type(v) for v in result.values()] == [type(v) for v in expected.values()]


# ---- zebra_puzzle ---------------------------------------------------------------------------

TRUTH = {"header": ["House", "Name"], "rows": [["1", "Al"], ["2", "Bo"]]}


def _answer(rows):
    return {"header": TRUTH["header"], "rows": rows}


ZEBRA = [
    (f"<answer>{json.dumps(_answer([['1', 'Al'], ['2', 'Bo']]))}</answer>", 1.0),
    # one of four cells wrong
    (f"<answer>{json.dumps(_answer([['1', 'Al'], ['2', 'Cy']]))}</answer>", 0.75),
    # a Python literal (single quotes) is read too
    (f"<answer>{_answer([['1', 'Bo'], ['2', 'Al']])!r}</answer>", 0.5),
    # the last answer wins
    (
        f"<answer>{json.dumps(_answer([['1', 'Al'], ['2', 'Bo']]))}</answer><answer>{{}}</answer>",
        0.0,
    ),
    # the answer pattern does not cross lines
    (f"<answer>\n{json.dumps(_answer([['1', 'Al'], ['2', 'Bo']]))}\n</answer>", 0.0),
    # fewer rows: IndexError, scored 0
    (f"<answer>{json.dumps(_answer([['1', 'Al']]))}</answer>", 0.0),
    # JSON true: no dict
    ("<answer>true</answer>", 0),
    ("no answer", 0.0),
]


@pytest.mark.parametrize(("solution", "score"), ZEBRA)
def test_zebra(solution, score):
    result = guru.compute_score("logic__zebra_puzzle_dataset", solution, TRUTH)
    assert result == {"score": score, "acc": score}
    assert type(result["score"]) is type(score)


def test_zebra_numpy_truth():
    # a parquet ground truth arrives as arrays
    truth = {"header": np.array(["House", "Name"]), "rows": np.array([["1", "Al"], ["2", "Bo"]])}
    solution = f"<answer>{json.dumps(_answer([['1', 'Al'], ['9', 'Bo']]))}</answer>"
    assert guru.compute_score("logic__zebra_puzzle", solution, truth)["score"] == 0.75


def test_zebra_timeout_scores_zero(monkeypatch):
    monkeypatch.setattr(logic, "ZEBRA_SECONDS", 0.3)
    monkeypatch.setattr(logic, "zebra_accuracy", lambda a, g: time.sleep(3) or 1.0)
    start = time.monotonic()
    solution = f"<answer>{json.dumps(TRUTH)}</answer>"
    assert guru.compute_score("logic__zebra_puzzle", solution, TRUTH)["score"] == 0.0
    assert time.monotonic() - start < 2.5


# ---- arcagi ---------------------------------------------------------------------------------

GRID = np.array([np.array([1, 2]), np.array([3, 4])])  # as parquet gives it
ARC = [
    ("<answer>[[1, 2], [3, 4]]</answer>", 1.0),
    # the answer may span lines (DOTALL), newlines are dropped
    ("<answer>\n[[1, 2],\n [3, 4]]\n</answer>", 1.0),
    ("<answer>[[1, 2], [3, 5]]</answer>", 0.0),
    # an extra row is padding (-1), which never counts as matched
    ("<answer>[[1, 2], [3, 4], [0, 0]]</answer>", 0.0),
    # "..." reads as -1
    ("<answer>[[1, 2], [3, ...]]</answer>", 0.0),
    # floats are truncated to int by numpy
    ("<answer>[[1.9, 2.2], [3.0, 4.7]]</answer>", 1.0),
    # ragged rows and non-lists fall back to [[0]]
    ("<answer>[[1, 2], [3]]</answer>", 0.0),
    ("<answer>[1, 2]</answer>", 0.0),
    # the grid ends at the first "]]": "[[[1, 2]]" is no literal, so [[0]]
    ("<answer>[[[1, 2]]]</answer>", 0.0),
    # without answer tags nothing is read
    ("[[1, 2], [3, 4]]", 0.0),
    # the first [[ ... ]] inside the last answer
    ("<answer>x</answer><answer>grid: [[1, 2], [3, 4]] or [[0]]</answer>", 1.0),
]


@pytest.mark.parametrize(("solution", "score"), ARC)
def test_arcagi(solution, score):
    assert guru.compute_score("simulation__arcagi1", solution, GRID) == {
        "score": score,
        "acc": score,
    }


def test_arcagi_edge_cases():
    # no answer is [[0]]: against a one-cell 0 grid it is right
    assert guru.compute_score("simulation__barc", "nothing", [[0]])["score"] == 1.0
    # a three-level list (spaces keep "]]" for the end) cannot fill the padded grid: numpy
    # raises, as in the seed
    with pytest.raises(ValueError):
        guru.compute_score("simulation__arcagi2", "<answer>[[ [1, 2], [3, 4] ]]</answer>", [[1]])
    generated, correct = [[1, 2], [3, 4]], [[1, 2, 0]]
    is_correct, fraction = logic.compare_grids(generated, correct)
    # 2x3 padded: matches at (0,0) and (0,1) only
    assert (is_correct, fraction) == (0.0, pytest.approx(2 / 6))
