"""The math scorer: the seed's default for every math__* data source.

Mirrors verl/utils/reward_score/naive_dapo.py @6133d10 (Reasoning360-MTL): the answer is the
content of the last \\boxed{...} (or \\fbox{...}) after the last </think>, or that whole text
when there is none; it is correct when PRIME's normalisation makes both equal, or the
Hendrycks-style normalisation (sympy for the difference) does, or PRIME's math_equal does.
Returns {"score": 1.0 | 0.0, "acc": bool}.

Behaviour kept on purpose because the seed behaves so:
- an empty \\boxed{} counts as no box: the whole text after </think> is graded.
- when grade_answer fails and either answer contains "\\pi", the result is 0: the seed calls
  math_equal(..., tiemout=True) there (a typo), the TypeError is caught and nothing is true.
- math_equal's symbolic step never compares (see ftlab.mtl.guru.prime_math).
- the sympy comparison is limited to 10 s; a timeout means "not equal" (the seed's bare
  except swallows it). The seed runs it in-process under SIGALRM; sympy's parse_expr is an
  eval of the model's answer, and a signal cannot stop a long C-level computation (9**9**9),
  so ftlab always runs it in a forked child that is killed at the limit
  (ftlab.mtl.guru._limits.call_limited): the same result whenever the seed's call returns in
  time, and it also works off the main thread, where the seed's signal.signal would fail.
- LaTeX answers are turned into text with pylatexenc (latex2text), which the seed requires;
  it is imported only when an answer holds a backslash, and its absence is an error that
  names the package.
"""

from __future__ import annotations

import re

from ftlab.mtl.guru import _limits
from ftlab.mtl.guru.prime_math import math_equal, normalize_answer

BAD_SUBSTRINGS = ["^{", "^("]  # sympy might hang on these; not worth the leniency
BAD_REGEXES = [r"\^[0-9]+\^", r"\^[0-9][0-9]+"]
TUPLE_CHARS = "()[]"
SYMPY_SECONDS = 10
UNITS = (
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
    "month", "year", "foot", "feet", "inch", "yard", "liter",
)  # fmt: skip


def _latex_to_text(expr: str) -> str:
    try:
        from pylatexenc import latex2text
    except ImportError as err:
        raise ImportError(
            "the GURU math scorer (naive_dapo) needs the package pylatexenc to read LaTeX "
            "answers, as the seed does: pip install pylatexenc"
        ) from err
    return latex2text.LatexNodes2Text().latex_to_text(expr)


def _sympy_parse(expr: str):
    from sympy.parsing import sympy_parser as sp

    transformations = sp.standard_transformations + (sp.implicit_multiplication_application,)
    return sp.parse_expr(expr.replace("^", "**"), transformations=transformations)


def _parse_latex(expr: str) -> str:
    expr = expr.replace("\\tfrac", "\\frac")
    expr = expr.replace("\\dfrac", "\\frac")
    expr = expr.replace("\\frac", " \\frac")  # play nice with mixed numbers
    expr = _latex_to_text(expr)
    for before, after in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"),
                          ("×", "*")):  # fmt: skip
        expr = expr.replace(before, after)
    return expr.strip()


def _is_float(num: str) -> bool:
    try:
        float(num)
        return True
    except ValueError:
        return False


def _is_int(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except Exception:  # noqa: BLE001 - inf/nan: not an int, as in the seed
        return False


def _is_frac(expr: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", expr))


def _str_is_int(x: str) -> bool:
    try:
        x = float(_strip_properly_formatted_commas(x))
        return abs(x - int(round(x))) <= 1e-7
    except Exception:  # noqa: BLE001 - as the seed
        return False


def _str_to_int(x: str) -> int:
    return int(float(x.replace(",", "")))


def _inject_implicit_mixed_number(step: str) -> str:
    """7 3/4 -> 7+3/4"""
    return re.sub("([0-9]) +([0-9])", "\\1+\\2", step)


def _strip_properly_formatted_commas(expr: str) -> str:
    # only thousands separators: tuple commas stay
    pattern = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
    while True:
        next_expr = pattern.sub("\\1\\3\\4", expr)
        if next_expr == expr:
            return next_expr
        expr = next_expr


def _normalize(expr: str | None) -> str | None:
    if expr is None:
        return None
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%")
    expr = expr.replace("\\$", "$")
    expr = expr.replace("$", "")
    expr = expr.replace("%", "")
    expr = expr.replace(" or ", " , ")
    expr = expr.replace(" and ", " , ")
    expr = expr.replace("million", "*10^6")
    expr = expr.replace("billion", "*10^9")
    expr = expr.replace("trillion", "*10^12")
    for unit in UNITS:
        expr = re.sub(f"{unit}(es)?(s)? *(\\^[0-9]+)?", "", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if len(expr) > 0 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(r",\\! *", "", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        try:
            expr = _parse_latex(expr)
        except ImportError:
            raise
        except Exception:  # noqa: BLE001, S110 - unparsable LaTeX stays as it is (seed)
            pass
    expr = re.sub("- *", "-", expr)  # mixed numbers and negative signs
    expr = _inject_implicit_mixed_number(expr)
    expr = expr.lower()  # text answers are not case sensitive
    if _str_is_int(expr):
        expr = str(_str_to_int(expr))
    return expr


def _count_unknown_letters(expr: str) -> int:
    expr = expr.replace("sqrt", "").replace("frac", "")
    return len({x for x in expr if x.isalpha()})


def _should_allow_eval(expr: str) -> bool:
    # no unknown text, no functions of more than two variables
    if _count_unknown_letters(expr) > 2:
        return False
    if any(bad in expr for bad in BAD_SUBSTRINGS):
        return False
    return not any(re.search(bad, expr) is not None for bad in BAD_REGEXES)


def _sympy_difference_is_zero(expr: str) -> bool:
    import sympy

    return sympy.simplify(_sympy_parse(expr)) == 0


def _are_equal_under_sympy(ground_truth_normalized: str, given_normalized: str) -> bool:
    expr = f"({ground_truth_normalized})-({given_normalized})"
    try:
        if not _should_allow_eval(expr):
            return False
        # a forked child, killed at the limit: parse_expr evals the model's text
        return bool(_limits.call_limited(_sympy_difference_is_zero, SYMPY_SECONDS, expr))
    except Exception:  # noqa: BLE001 - the seed's bare except: timeouts and parse errors
        return False


def _split_tuple(expr: str) -> list[str]:
    """Elements of a tuple/interval; thousands separators are not element separators."""
    expr = _strip_properly_formatted_commas(expr)
    if len(expr) == 0:
        return []
    if (
        len(expr) > 2
        and expr[0] in TUPLE_CHARS
        and expr[-1] in TUPLE_CHARS
        and all(ch not in expr[1:-1] for ch in TUPLE_CHARS)
    ):
        return [elem.strip() for elem in expr[1:-1].split(",")]
    return [expr]


def grade_answer(given_answer: str, ground_truth: str) -> tuple[bool, str]:
    """Correct if the normalised strings agree, or sympy simplifies the difference to 0."""
    gt_mathd = normalize_answer(ground_truth)
    given_mathd = normalize_answer(given_answer)
    if gt_mathd == given_mathd:  # at least as lenient as mathd
        return True, given_mathd

    gt_normalized = _normalize(ground_truth)
    given_normalized = _normalize(given_answer)
    if gt_normalized == given_normalized:
        return True, given_normalized
    if len(given_normalized) == 0:
        return False, given_normalized

    gt_elems = _split_tuple(gt_normalized)
    given_elems = _split_tuple(given_normalized)
    if len(gt_elems) > 1 and (
        gt_normalized[0] != given_normalized[0] or gt_normalized[-1] != given_normalized[-1]
    ):
        return False, given_normalized
    if len(gt_elems) != len(given_elems):
        return False, given_normalized
    is_correct = False
    for gt_elem, given_elem in zip(gt_elems, given_elems, strict=True):
        if _is_frac(gt_elem) and _is_frac(given_elem):
            # unreduced fractions must match exactly: no sympy
            is_correct = gt_elem == given_elem
        elif _str_is_int(gt_elem) != _str_is_int(given_elem):
            # an integer ground truth needs a strict match
            is_correct = False
        else:
            is_correct = _are_equal_under_sympy(gt_elem, given_elem)
        if not is_correct:
            break
    return is_correct, given_normalized


def last_boxed_content(string: str) -> str | None:
    """Stripped content of the last \\boxed{...} (else \\fbox{...}); None if unclosed/absent."""
    idx = string.rfind("\\boxed")
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    left = None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
            if left is None:
                left = i
        elif string[i] == "}":
            depth -= 1
            if depth == 0:
                return None if left is None else string[left + 1 : i].strip()
    return None


def match_answer(response: str) -> tuple[bool, str]:
    response = response.split("</think>")[-1]
    boxed = last_boxed_content(response)
    if boxed:  # an empty box is no box (seed)
        return True, boxed
    return False, response


def compute_score(solution_str, ground_truth, extra_info: dict | None = None) -> dict:
    model_output = str(solution_str)
    ground_truth = str(ground_truth)
    _, answer = match_answer(model_output)
    correct, _ = grade_answer(answer, ground_truth)
    if not correct:
        if "\\pi" in answer or "\\pi" in ground_truth:
            correct = False  # the seed's math_equal(..., tiemout=True) raises TypeError here
        else:
            try:
                correct = math_equal(answer, ground_truth, timeout=True)
            except Exception:  # noqa: BLE001 - the seed scores any failure as wrong
                correct = False
    return {"score": 1.0 if correct else 0.0, "acc": correct}
