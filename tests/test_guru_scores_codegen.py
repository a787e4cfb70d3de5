"""ftlab.mtl.guru: code generation (coder1) with the seed's default local executor.

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
coder1/__init__.py and unsafe_local_exec.py; the reason is given with each case.
"""

import json

import pytest

from ftlab.mtl import guru
from ftlab.mtl.guru import codegen

FUNCTIONAL = json.dumps({"functional": "assert add(1, 2) == 3\nassert add(0, 0) == 0"})
STDIO = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7"]})
FENCE = "```"


def block(code, lang="python"):
    return f"{FENCE}{lang}\n{code}\n{FENCE}"


CASES = [
    (block("def add(a, b):\n    return a + b"), FUNCTIONAL, 1.0),
    (block("def add(a, b):\n    return a - b"), FUNCTIONAL, 0.0),
    # no code block: nothing runs
    ("def add(a, b):\n    return a + b", FUNCTIONAL, 0.0),
    # blocks are joined: the second defines what the first calls
    (
        block("def add(a, b):\n    return plus(a, b)")
        + " and "
        + block("def plus(a, b):\n    return a + b"),
        FUNCTIONAL,
        1.0,
    ),
    # only code after the first </think> counts
    ("<think>" + block("def add(a, b): return a + b") + "</think> none", FUNCTIONAL, 0.0),
    # stdin programs: input(), sys.stdin and open(0) all read the test input
    (block("a, b = map(int, input().split())\nprint(a + b)"), STDIO, 1.0),
    (block("import sys\nprint(sum(map(int, sys.stdin.read().split())))"), STDIO, 1.0),
    (block("print(sum(map(int, open(0).read().split())))"), STDIO, 1.0),
    # numbers within 1e-6 are equal, beyond are not
    (block("print(sum(map(int, input().split())) + 1e-7)"), STDIO, 1.0),
    (block("print(sum(map(int, input().split())) + 1e-3)"), STDIO, 0.0),
    # right output but a non-zero exit status
    (block("print(sum(map(int, input().split())))\nraise SystemExit(1)"), STDIO, 0.0),
]


@pytest.mark.parametrize(("solution", "truth", "score"), CASES)
def test_coder1(solution, truth, score):
    assert guru.compute_score("codegen__livecodebench", solution, truth, {}) == {
        "score": score,
        "acc": score,
    }


def test_fuzzy_equal():
    assert codegen.fuzzy_equal("YES\n1.0000001", "yes\r\n1")
    assert not codegen.fuzzy_equal("yes", "no")
    assert not codegen.fuzzy_equal("1 2", "1 2 3")
    assert not codegen.fuzzy_equal("a", "b")
    assert not codegen.fuzzy_equal("1\n2", "1")
    assert codegen.fuzzy_equal("  3\n", "3")


def test_extract_code():
    # any language tag, a block needs its newlines; the first </think> starts the answer
    text = f"{FENCE}cpp\nint x;\n{FENCE} {FENCE}python x = 1{FENCE}"
    assert codegen.extract_code(text) == "int x;"
    assert codegen.extract_code(f"a</think>{block('p')}</think>{block('q')}") == "p\nq"


def test_prefix_is_put_twice(monkeypatch):
    seen = []
    monkeypatch.setattr(
        codegen, "run_program", lambda code, stdin=None: seen.append(code) or (True, "")
    )
    guru.compute_score("codegen__mbpp", block("x = 1"), FUNCTIONAL, {"prefix": "import math"})
    assert seen == ["import math\nimport math\nx = 1\n" + json.loads(FUNCTIONAL)["functional"]]


def test_unported_and_unknown_truths():
    with pytest.raises(guru.UnsupportedSource, match="pytest"):
        guru.compute_score("codegen__x", block("x = 1"), json.dumps({"pytest": "def test(): pass"}))
    with pytest.raises(ValueError, match="No idea"):
        guru.compute_score("codegen__x", block("x = 1"), json.dumps({"tests": []}))
    with pytest.raises(ValueError, match="max_workers"):
        guru.compute_score("codegen__x", block("x = 1"), json.dumps({"inputs": [], "outputs": []}))
