"""ftlab.mtl.guru: table (tablereason) and code simulation (codeio, cruxeval).

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
tablereason.py (+ math.py, prime_math/grader.py), codeio.py, cruxeval/; the reason is given
with each case.
"""

import json

import pytest

from ftlab.mtl import guru
from ftlab.mtl.guru import simulation, table
from ftlab.tir.sandbox import SandboxLimits

# ---- tablereason ----------------------------------------------------------------------------

TABLE = [
    # "%" reads as "/ 100" and "\" is dropped: 12.5 / 100 = 0.125
    (r"\boxed{12.5\%}", "0.125", True),
    # math_equal also accepts the truth times 100 (a percentage)
    (r"\boxed{12.5}", "0.125", True),
    # "$" and "," are dropped
    (r"\boxed{$1,000}", "1000", True),
    # ":" reads as "/"
    (r"\boxed{1:2}", "0.5", True),
    # tolerance 1e-3 (relative)
    (r"\boxed{3.1416}", "3.14159", True),
    (r"\boxed{3.15}", "3.14159", False),
    # text answers: lower-cased, then verl's is_equiv (spaces dropped)
    (r"\boxed{Yes}", "yes", True),
    (r"\boxed{20 \\text{to} 39}", "20 to 39", True),
    # several answers: sorted, same count, each right
    (r"\boxed{B | a}", "a|b", True),
    (r"\boxed{a}", "a|b", 0),
    (r"\boxed{1.5|2}", "2|1.5", True),
    # no box: the whole text (after </think>) is the answer
    ("The answer is 5", "5", False),
    (r"<think>\boxed{9}</think> 5", "5", True),
    # "\boxed " runs to the next "$"
    (r"so \boxed 42$ done", "42", True),
    # division by zero is no number; the strings differ
    (r"\boxed{1/0}", "inf", False),
    # an expression beyond arithmetic is evaluated (in the sandbox) as the seed's eval does
    (r"\boxed{abs(-3)}", "3", True),
    (r"\boxed{round(2.5)}", "2", True),
]


@pytest.mark.parametrize(("solution", "truth", "score"), TABLE)
def test_tablereason(solution, truth, score):
    result = guru.compute_score("table__finqa", solution, truth)
    assert result == {"score": score, "acc": score}
    assert type(result["score"]) is type(score)


def test_tablereason_fbox_raises_as_the_seed():
    # verl's remove_boxed asserts a "\boxed{" prefix; the seed does not catch it
    with pytest.raises(AssertionError):
        guru.compute_score("table__hitab", r"\fbox{3}", "3")


@pytest.mark.parametrize(
    "text", ["1+2*3", "-4/3", "1e3", "1_000", " 7/2", "\t2.5*-2", "10 / 100", "(1+2)/(3-4)"]
)
def test_eval_float_arithmetic_is_local_and_exact(text, monkeypatch):
    def no_sandbox(*args):
        raise AssertionError("plain arithmetic must not need the sandbox")

    monkeypatch.setattr(table, "run_cell", no_sandbox)
    assert table.eval_float(text) == float(eval(text))  # noqa: S307 - the reference


@pytest.mark.parametrize("text", ["1/0", "05", "(1, 2)", "x", "'a' + 1", "[1]"])
def test_eval_float_failures(text):
    with pytest.raises(Exception):  # noqa: B017 - any failure means "not a number" (seed)
        table.eval_float(text)


def test_eval_float_limits(monkeypatch):
    # the seed would hang on this; here it is no number after the sandbox's limit
    monkeypatch.setattr(
        table,
        "EVAL_LIMITS",
        SandboxLimits(cpu_seconds=1, wall_seconds=1.0, final_answer_helper=False),
    )
    with pytest.raises(ValueError, match="not a number"):
        table.eval_float("9**9**9")
    assert table.eval_float("'3' * 2") == 33.0  # str repetition, then float("33")


# ---- codeio ---------------------------------------------------------------------------------

CODEIO = [
    ('```json\n{"output": 3}\n```', '"output": 3', True),
    ('```json\n{"output": 4}\n```', '"output": 3', False),
    # "input" answers, a truth wrapped in braces
    ('```json\n{"input": {"n": 2}}\n```', '{"input": {"n": 2}}', True),
    # "true" strings and JSON strings normalise
    ('```json\n{"answer": true}\n```', '"output": {"answer": "true"}', True),
    ('{"output": "[1, 2]"}', "[1, 2]", True),
    # no code block: the last complete {...} in the text
    ('first {"output": 1} then {"output": 2}', '"output": 2', True),
    # the first code block
    ('```json\n{"output": 1}\n``` ```json\n{"output": 2}\n```', '"output": 2', False),
    # no answer is None, which equals a truth that reads as None
    ("I do not know", "None", True),
    ("I do not know", "0", False),
    # the bool shortcut compares the raw truth text
    ('{"output": "TRUE"}', "true", True),
]


@pytest.mark.parametrize(("solution", "truth", "score"), CODEIO)
def test_codeio(solution, truth, score):
    assert guru.compute_score("simulation__codeio", solution, truth) == {
        "score": score,
        "acc": score,
    }


# ---- cruxeval -------------------------------------------------------------------------------

FUNCTIONAL = json.dumps({"functional": "def f(x):\n    return x * 2"})
CRUX = [
    ("```python\nassert f(2) == 4\n```", 1),
    ("```python\nassert f(2) == 5\n```", 0),
    # printing is swallowed
    ("```python\nprint('hi'); assert f('a') == 'aa'\n```", 1),
    # no code block: the whole text runs
    ("assert f(1) == 2", 1),
    # </think> split keeps the piece after the *first* one; without a block there it runs
    ("<think>a</think>b</think>```python\nassert f(1) == 2\n```", 0),
    ("<think>```python\nassert False\n```</think>```python\nassert f(1) == 2\n```", 1),
    # stdin is unreadable; the reliability guard disables exit, os.getcwd, os.remove
    ("```python\ninput()\n```", 0),
    ("```python\nexit()\n```", 0),
    ("```python\nimport os\nos.getcwd()\n```", 0),
    # SystemExit is a failure too
    ("```python\nimport sys\nsys.exit(0)\n```", 0),
    # a syntax error
    ("```python\nassert f(3) ==\n```", 0),
]


@pytest.mark.parametrize(("solution", "score"), CRUX)
def test_cruxeval(solution, score):
    result = guru.compute_score("simulation__cruxeval-o", solution, FUNCTIONAL)
    assert result == {"score": score, "acc": score}


def test_cruxeval_timeout(monkeypatch):
    monkeypatch.setattr(simulation, "CRUXEVAL_SECONDS", 0.5)
    solution = "```python\nwhile True:\n    pass\n```"
    assert guru.compute_score("simulation__cruxeval-i", solution, FUNCTIONAL)["score"] == 0
    # a verdict the program prints itself does not count: only the cell's nonce line does
    forged = "```python\nimport os\nos.write(1, b'\\npassed\\n')\nwhile True:\n    pass\n```"
    assert guru.compute_score("simulation__cruxeval-i", forged, FUNCTIONAL)["score"] == 0


def test_cruxeval_truth_must_be_a_literal():
    with pytest.raises(ValueError):
        guru.compute_score("simulation__cruxeval-o", "assert True", "dict(functional='x')")
