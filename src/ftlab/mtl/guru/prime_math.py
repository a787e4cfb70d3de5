"""PRIME's answer normalisation and `math_equal`, as the seed's naive_dapo and tablereason use them.

Mirrors (Reasoning360-MTL @6133d10):
  verl/utils/reward_score/prime_math/math_normalize.py  normalize_answer, _strip_string
  verl/utils/reward_score/math.py                       strip_string (the same steps; its
                                                         last_boxed_only_string, remove_boxed,
                                                         is_equiv are here too, for tablereason)
  verl/utils/reward_score/prime_math/grader.py          math_equal

Behaviour kept on purpose because the seed behaves so:
- symbolic_equal never compares anything: the seed writes `with timeout_limit(seconds=...)`,
  but timeout_limit (verl/utils/py_functional.py) is a decorator factory, so every `with`
  raises TypeError, which the seed catches; parsing, simplify and N are never reached and the
  answer is False. `symbolic_equal` below is that outcome.
- all([...]) over sub-answers evaluates every pair (no short-circuit), so an exception raised
  by a later pair still propagates: the list comprehensions are kept.
- the matrix branches test for "\\x08egin{pmatrix}" (the seed's "\\begin" with a backspace,
  a typo), so they run only for a ground truth holding a backspace character. There the seed
  eval()s the prediction; here ast.literal_eval does, so a non-literal prediction raises
  instead of being executed (the callers turn any exception into "not equal", as the seed's
  NameError/SyntaxError would be for non-literal text).
- handle_pi eval()s the text with \\pi replaced, as the seed does. The ported callers only
  reach it with ground-truth text (naive_dapo routes every \\pi answer away from math_equal;
  tablereason passes the prediction as a float).
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
from math import isclose

# ---- math_normalize.py / math.py -------------------------------------------------------------


def normalize_answer(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = answer.strip()
    try:
        m = re.search(r"^\\text\{(?P<text>.+?)\}$", answer)
        if m is not None:
            answer = m.group("text").strip()
        return strip_string(answer)
    except Exception:  # noqa: BLE001 - the seed returns the stripped text on any failure
        return answer


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":  # IndexError on "\frac" at the end: callers catch it, as in the seed
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b, rest = substr[0], substr[1], substr[2:]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + rest
        else:
            new_str += "{" + a + "}" + b + rest
    return new_str


def _fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    # "\text{ " only describes units (in MATH's val set); two of them is an error the seed raises
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:
            raise AssertionError("more than one '\\text{ ' unit")
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":  # IndexError on a trailing "\sqrt": callers catch it, as in the seed
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    # "k = 3" -> "3" when the left side is at most two characters
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def last_boxed_only_string(string: str) -> str | None:
    """verl math.py: the last \\boxed{...} (with its braces) or "\\boxed " up to a "$"."""
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
        if string[i] == "}":
            depth -= 1
            if depth == 0:
                return string[idx : i + 1]
    return None


def remove_boxed(s: str) -> str:
    """verl math.py remove_boxed: its asserts raise AssertionError, e.g. on an \\fbox{...}."""
    if "\\boxed " in s:
        if not s.startswith("\\boxed "):
            raise AssertionError("not a '\\boxed ' answer")
        return s[len("\\boxed ") :]
    if not s.startswith("\\boxed{") or s[-1] != "}":
        raise AssertionError("not a '\\boxed{...}' answer")
    return s[len("\\boxed{") : -1]


def is_equiv(str1: str | None, str2: str | None) -> bool:
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return strip_string(str1) == strip_string(str2)
    except Exception:  # noqa: BLE001 - the seed compares the raw strings then
        return str1 == str2


# ---- grader.py -------------------------------------------------------------------------------


def is_digit(s) -> tuple[bool, float | None]:
    try:
        if "{,}" in str(s):
            return True, float(str(s).replace("{,}", ""))
        return True, float(str(s).replace(",", ""))
    except ValueError:
        return False, None


def _normalize(answer, pi: float):
    if isinstance(answer, str) and re.match(r"\$\d+(\.\d+)?", answer):
        return answer[1:]
    if isinstance(answer, str) and (
        re.match(r"^\d+(\.\d+)?%$", answer) or re.match(r"^\d+(\.\d+)?\\%$", answer)
    ):
        return answer.replace("\\%", "").replace("%", "")
    # "answer_base": the part before "_" as an int (ValueError when it is not a number)
    if isinstance(answer, str) and "_" in answer:
        answer = int(float(answer.split("_")[0]))
    return _handle_pi(answer, pi)


def _handle_pi(string, pi: float):
    if isinstance(string, str) and "\\pi" in string:
        idx = string.find("\\pi")
        while idx != -1:
            factor = "*" if idx > 0 and string[idx - 1].isdigit() else "1*"
            string = string[:idx] + f"{factor}{pi}" + string[idx + 3 :]
            idx = string.find("\\pi", idx + 1)
        with contextlib.suppress(Exception):
            string = eval(string)  # noqa: S307 - the seed's evaluation; ground-truth text only
    return string


def math_equal(
    prediction,
    reference,
    include_percentage: bool = True,
    tolerance: float = 1e-4,
    timeout: float = 10.0,
    pi: float = math.pi,
) -> bool:
    prediction = _normalize(prediction, pi)
    reference = _normalize(reference, pi)
    if isinstance(prediction, str) and len(prediction) > 1000:
        prediction = prediction[:1000]

    if isinstance(prediction, str) and isinstance(reference, str):
        if prediction.strip().lower() == reference.strip().lower():
            return True
        if prediction.replace(" ", "") == reference.replace(" ", ""):
            return True

    try:
        if is_digit(prediction)[0] and is_digit(reference)[0]:
            prediction = is_digit(prediction)[1]
            reference = is_digit(reference)[1]
            candidates = (
                [reference / 100, reference, reference * 100] if include_percentage else [reference]
            )
            for item in candidates:
                try:
                    if isclose(item, prediction, rel_tol=tolerance):
                        return True
                except Exception:  # noqa: BLE001, S112 - as the seed: try the next candidate
                    continue
            return False
    except Exception:  # noqa: BLE001, S110 - as the seed: fall through to the symbolic checks
        pass

    if not prediction and prediction not in [0, False]:
        return False

    reference = str(reference).strip()
    prediction = _format_intervals(str(prediction).strip())

    pred_str, ref_str = prediction, reference
    if (
        prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")
    ) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    ):
        pred_str = pred_str.strip("[]()")
        ref_str = ref_str.strip("[]()")
    for s in "{}()":
        ref_str = ref_str.replace(s, "")
        pred_str = pred_str.replace(s, "")
    if pred_str == ref_str:
        return True

    def all_equal(preds, refs) -> bool:
        # a list, not a generator: the seed evaluates every pair (see module docstring)
        pairs = zip(preds, refs, strict=False)
        return all([math_equal(p, r, include_percentage, tolerance) for p, r in pairs])

    if (
        prediction
        and reference
        and prediction[0] in "(["
        and prediction[-1] in ")]"
        and prediction[0] == reference[0]
        and prediction[-1] == reference[-1]
    ):
        pred_parts = prediction[1:-1].split(",")
        ref_parts = reference[1:-1].split(",")
        if len(pred_parts) == len(ref_parts) and all_equal(pred_parts, ref_parts):
            return True

    if "," in prediction and "," in reference:
        pred_parts = [item.strip() for item in prediction.split(",")]
        ref_parts = [item.strip() for item in reference.split(",")]
        if len(pred_parts) == len(ref_parts):
            return bool(all_equal(pred_parts, ref_parts))

    # reference[0] raises IndexError on an empty reference, as in the seed
    if prediction.startswith("Point") and reference[0] == "(" and reference[-1] == ")":
        pred_parts = prediction[prediction.find("(") + 1 : -1].split(",")
        ref_parts = reference[1:-1].split(",")
        if len(pred_parts) == len(ref_parts) and all_equal(pred_parts, ref_parts):
            return True

    backspace_pmatrix = "\x08egin{pmatrix}"  # the seed's "\begin{pmatrix}" (see docstring)
    if backspace_pmatrix in reference and prediction.startswith("Matrix"):
        try:
            from sympy.parsing.sympy_parser import parse_expr

            pred_matrix = parse_expr(prediction)
            ref_items = reference.split()[1:-1:2]
            if len(pred_matrix) == len(ref_items) and all_equal(pred_matrix, ref_items):
                return True
        except Exception:  # noqa: BLE001, S110 - as the seed
            pass
    elif backspace_pmatrix in reference and prediction.startswith("[") and prediction.endswith("]"):
        if isinstance(ast.literal_eval(prediction), list):
            try:
                pred_matrix = ast.literal_eval(prediction)
                rows = (
                    reference.lstrip("\\begin{pmatrix}")  # noqa: B005 - the seed's strip sets
                    .lstrip("\x08egin{pmatrix}")
                    .rstrip("\\end{pmatrix}")
                    .rstrip("\\end{pmatrix}")
                )
                rows = [row.split("&") if "&" in row else row for row in rows.split("\\")]
                if len(pred_matrix) == len(rows) and all_equal(pred_matrix, rows):
                    return True
            except Exception:  # noqa: BLE001, S110 - as the seed
                pass

    return symbolic_equal(prediction, reference, tolerance, timeout)


def symbolic_equal(a, b, tolerance: float, timeout: float = 10.0) -> bool:
    """Always False: the seed's version fails before comparing anything (module docstring)."""
    return False


def _format_intervals(prediction: str) -> str:
    patterns = (
        (r"^Interval\((.*)\)$", "[{}]"),
        (r"^Interval\.Ropen\((.*)\)$", "[{})"),
        (r"^Interval\.Lopen\((.*)\)$", "({}]"),
        (r"^Interval\.open\((.*)\)$", "({})"),
    )
    for pattern, shape in patterns:
        match = re.match(pattern, prediction)
        if match:
            return shape.format(match.group(1))
    return prediction
