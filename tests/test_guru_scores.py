"""ftlab.mtl.guru: the seed's scorer dispatch and its math scorer (naive_dapo).

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
(__init__.py, naive_dapo.py, prime_math/); the reason is given with each case.
"""

import sys
import threading
import time

import pytest

from ftlab.mtl import guru
from ftlab.mtl.guru import _limits, naive_dapo
from ftlab.mtl.guru import prime_math as pm

# ---- dispatch --------------------------------------------------------------------------------

# the suite's data sources (domain__name) and the seed module that default_compute_score imports
SUITE = [
    ("math__aime_repeated_8x", "naive_dapo"),
    ("math__math", "naive_dapo"),
    ("codegen__humaneval", "coder1"),
    ("codegen__mbpp", "coder1"),
    ("codegen__livecodebench", "coder1"),
    ("stem__gpqa_diamond", "supergpqa"),  # "no_box" absent: supergpqa's boxed extraction
    ("stem__gpqa_diamond_no_box", "gpqa"),
    ("stem__supergpqa", "supergpqa"),
    ("simulation__arcagi1", "arcagi"),
    ("simulation__barc", "arcagi"),
    ("logic__zebra_puzzle_dataset", "zebra_puzzle"),
    ("simulation__codeio", "codeio"),
    ("simulation__cruxeval-i", "cruxeval"),
    ("simulation__cruxeval-o", "cruxeval"),
    ("table__finqa", "tablereason"),
    ("table__hitab", "tablereason"),
    ("table__multihier", "tablereason"),
    ("ood__livebench", "livebench"),
    ("ood__ifeval", "ifeval"),
    ("aime2024", "math_dapo"),  # a bare "aime" source is not math__: the seed's math_dapo branch
    ("numina_olympiads", "prime_math"),
    ("apps", "prime_code"),
]


@pytest.mark.parametrize(("source", "module"), SUITE)
def test_dispatch_follows_the_seed(source, module):
    assert guru._seed_scorer(source, {}) == module
    if module in guru.PORTED:
        assert guru.scorer_name(source) == module
    else:
        with pytest.raises(guru.UnsupportedSource, match=f"{source!r}.*{module!r}.*not ported"):
            guru.scorer_name(source)


def test_math_reward_metric_picks_the_scorer():
    assert guru._seed_scorer("math__x", {"reward_metric": "prime_math"}) == "prime_math"
    assert guru._seed_scorer("math__x", {"reward_metric": "math_llm_judge"}) == "math_llm_judge"
    assert guru._seed_scorer("math__x", {"reward_metric": "other"}) == "naive_dapo"
    assert guru.scorer_name("math__x", None) == "naive_dapo"
    with pytest.raises(guru.UnsupportedSource, match="prime_math"):
        guru.compute_score("math__x", r"\boxed{1}", "1", {"reward_metric": "prime_math"})


@pytest.mark.parametrize("source", ["logic__arcagi1", "ood__ifeval_extra", "gsm8k", "unknown"])
def test_sources_the_seed_cannot_score(source):
    # logic__arcagi* matches no branch (the seed's arcagi data are simulation__arcagi*);
    # ood__ sources are compared with ==, not startswith
    with pytest.raises(guru.UnsupportedSource, match=f"{source!r}.*NotImplementedError"):
        guru.scorer_name(source)
    assert issubclass(guru.UnsupportedSource, ValueError)


def test_non_string_source_is_a_clear_error():
    with pytest.raises(guru.UnsupportedSource, match="must be a string"):
        guru.scorer_name(None)


# ---- math (naive_dapo) -------------------------------------------------------------------------

MATH = [
    # PRIME normalisation turns "0.5" into \frac{1}{2}
    (r"so \boxed{\frac{1}{2}}", "0.5", 1.0),
    # nested braces inside the box
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", 1.0),
    # the last box wins
    (r"\boxed{3} no, \boxed{4}", "4", 1.0),
    (r"\boxed{3} no, \boxed{4}", "3", 0.0),
    # only the text after the last </think> counts
    (r"<think>\boxed{4}</think> \boxed{5}", "4", 0.0),
    # no box: the whole text is graded and an integer needs a strict match
    ("The answer is 5", "5", 0.0),
    # 5.0 normalises to the integer 5
    (r"\boxed{5.0}", "5", 1.0),
    # unreduced fractions must match exactly (no sympy), and math_equal does not rescue them
    (r"\boxed{2/4}", "1/2", 0.0),
    # thousands separators are dropped for integers
    (r"\boxed{1,000}", "1000", 1.0),
    # tuples: order matters, spaces do not
    (r"\boxed{(2,1)}", "(1,2)", 0.0),
    (r"\boxed{(1, 2)}", "(1,2)", 1.0),
    # sympy proves the difference is 0
    (r"\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    # math_equal accepts reference*100 as a percentage
    (r"\boxed{50}", "0.5", 1.0),
    # "\text{ " marks units on the right
    (r"\boxed{5 \text{ meters}}", "5", 1.0),
    # math_equal reads "12_3" as 12 in base notation (grade_answer's float("12_3") is 123)
    (r"\boxed{12_3}", "12", 1.0),
    # \text{} is removed and text answers are lower-cased
    (r"\boxed{\text{Yes}}", "yes", 1.0),
    # \pi on either side: the seed's math_equal(..., tiemout=True) typo makes it wrong, even
    # though pi = 3.14159 numerically
    (r"\boxed{\pi}", "3.14159", 0.0),
    (r"\boxed{2\pi}", r"2\pi", 1.0),
]


@pytest.mark.parametrize(("solution", "truth", "score"), MATH)
def test_math_scores(solution, truth, score):
    pytest.importorskip("pylatexenc")  # the seed's LaTeX-to-text step (naive_dapo._parse_latex)
    result = guru.compute_score("math__math", solution, truth, {})
    assert result == {"score": score, "acc": bool(score)}
    assert list(result) == ["score", "acc"]


def test_math_scores_without_latex():
    # no backslash anywhere: pylatexenc is never needed
    assert guru.compute_score("math__math", "x = 7 so 7", "7", None)["score"] == 0.0
    assert guru.compute_score("math__math", "</think>7", "7", None) == {"score": 1.0, "acc": True}
    # a non-string ground truth is compared as str(), as the seed does
    assert guru.compute_score("math__math", "</think>42", 42, None)["score"] == 1.0


def test_match_answer_edge_cases():
    # an empty box is no box: the whole text is graded
    assert naive_dapo.match_answer(r"x \boxed{} y") == (False, r"x \boxed{} y")
    # an unclosed box is no box
    assert naive_dapo.match_answer(r"\boxed{5") == (False, r"\boxed{5")
    assert naive_dapo.match_answer(r"\fbox{ 6 }") == (True, "6")
    assert naive_dapo.match_answer(r"\boxed{a{b}c} \fbox{9}") == (True, "a{b}c")


def test_missing_pylatexenc_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pylatexenc", None)
    with pytest.raises(ImportError, match="pylatexenc"):
        guru.compute_score("math__math", r"\boxed{\frac{1}{3}}", "7", {})


def test_sympy_comparison_off_the_main_thread():
    pytest.importorskip("pylatexenc")
    out = {}
    worker = threading.Thread(
        target=lambda: out.update(guru.compute_score("math__m", r"\boxed{(x+1)^2}", "x^2+2x+1"))
    )
    worker.start()
    worker.join(60)
    assert out == {"score": 1.0, "acc": True}


def test_sympy_timeout_is_not_equal(monkeypatch):
    monkeypatch.setattr(naive_dapo, "SYMPY_SECONDS", 1)
    monkeypatch.setattr(naive_dapo, "_sympy_difference_is_zero", lambda expr: time.sleep(5) or 1)
    start = time.monotonic()
    assert naive_dapo._are_equal_under_sympy("x", "y") is False
    assert time.monotonic() - start < 4


def test_sympy_eval_of_a_huge_power_is_killed_at_the_limit(monkeypatch):
    """parse_expr evals the answer: 9**9**9 runs in C, where a signal cannot stop it; the
    forked child is killed at the limit."""
    monkeypatch.setattr(naive_dapo, "SYMPY_SECONDS", 1)
    start = time.monotonic()
    assert naive_dapo._are_equal_under_sympy("(sqrt(2))", "(9**9**9)") is False
    assert time.monotonic() - start < 4


def _boom(x):
    raise KeyError(x)


def test_call_limited():
    assert _limits.call_limited(abs, 5, -3) == 3
    with pytest.raises(KeyError):
        _limits.call_limited(_boom, 5, "k")
    with pytest.raises(TimeoutError):
        _limits.call_limited(time.sleep, 0.3, 3)


def test_prime_math_equal_branches():
    assert pm.math_equal("$5", "5")  # "$<number>" loses its "$"
    assert pm.math_equal("50%", "50")
    assert pm.math_equal("0.12345", "0.123456")  # rel_tol 1e-4
    assert not pm.math_equal("0.1234", "0.12345")
    assert pm.math_equal("Interval(1, 2)", "[1,2]")
    assert pm.math_equal("Point(3)", "(3.0)")
    # with commas on both sides the comma branch decides first: "Point(1" vs "(1.0" fails
    assert not pm.math_equal("Point(1, 2)", "(1.0,2)")
    assert not pm.math_equal("x+1", "1+x")  # symbolic_equal never compares (seed)
    with pytest.raises(IndexError):  # "Point" against an empty reference: the seed raises
        pm.math_equal("Point(1)", " ")
    with pytest.raises(ValueError):  # base notation that is no number
        pm.math_equal("a_2", "5")


def test_prime_normalize_answer():
    assert pm.normalize_answer(r"\text{ 0.5 }") == r"\frac{1}{2}"
    assert pm.normalize_answer(r"\dfrac12") == r"\frac{1}{2}"
    assert pm.normalize_answer(r"k = \sqrt3") == r"\sqrt{3}"
    # two unit markers: the seed's assert fails and the stripped input comes back
    assert pm.normalize_answer(r" 1\text{ m}\text{ s} ") == r"1\text{ m}\text{ s}"


def test_a_timed_out_child_that_outlives_sigterm_is_killed(monkeypatch):
    """A child that handles SIGTERM in Python (a handler inherited from the parent) and is in
    a long call keeps running after terminate(); it is killed, so it neither burns a CPU nor
    holds the parent's exit (multiprocessing joins live children at exit)."""
    import multiprocessing
    import signal

    old = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # survives SIGTERM
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            _limits.call_limited(time.sleep, 0.5, 30)
        assert time.monotonic() - start < 5
    finally:
        signal.signal(signal.SIGTERM, old)
    assert multiprocessing.active_children() == []
