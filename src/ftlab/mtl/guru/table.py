"""The table scorer (table__*: finqa, hitab, multihier).

Mirrors verl/utils/reward_score/tablereason.py @6133d10 (Reasoning360-MTL), with verl's
math.py box helpers and PRIME's math_equal (ftlab.mtl.guru.prime_math): response and truth
are lower-cased; the answer is the last \\boxed{...} after the last </think> (double-backslash
\\\\text{..} unwrapped, double backslashes dropped), else that whole text. A truth without "|"
is one answer; with "|" the answers are compared as sorted lists of the same length. One
answer is right when, with "," and "$" dropped, "%" read as "/ 100", ":" as "/" and "\\"
dropped, it evaluates to a number that math_equal (tolerance 1e-3) accepts; when it does not
evaluate to a number (any exception), verl's is_equiv string comparison decides.
Returns {"score": bool (0 when the answer counts differ), "acc": same}.

Behaviour that differs from the seed, and why:
- The seed eval()s the answer text in-process. Here plain arithmetic (int/float literals with
  + - * / and signs) is evaluated directly, with Python's own operators, so the result is the
  same; anything else runs in ftlab's sandbox (10 s wall/CPU, 2 GiB) with eval() as the seed
  does. Differences: the seed's eval sees tablereason's module globals (re, math = verl's
  math module, math_equal, ...), the sandbox only `re`; a name that only those globals define
  fails here (in the seed it is a module or function, so float() fails too, unless the text
  calls one of them); and an answer that runs past the limits (e.g. 9**9**9), where the seed
  would hang, counts as not a number.
- A box that verl's remove_boxed refuses (an \\fbox{...} answer) raises AssertionError, as the
  seed does (it is not caught there either).
"""

from __future__ import annotations

import ast
import operator
import re

from ftlab.mtl.guru._sandbox import run_cell
from ftlab.mtl.guru.prime_math import is_equiv, last_boxed_only_string, math_equal, remove_boxed
from ftlab.tir.sandbox import SandboxLimits

EVAL_LIMITS = SandboxLimits(
    cpu_seconds=10, wall_seconds=10.0, memory_mb=2048, final_answer_helper=False
)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}  # fmt: skip
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MARK = "@@ftlab-guru-value@@"


class _NotArithmetic(Exception):
    pass


def _arith(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_arith(node.operand))
    raise _NotArithmetic


def eval_float(text: str) -> float:
    """float(eval(text)) as the seed computes it; raises whatever makes that fail."""
    # eval() of a string ignores leading spaces and tabs; the parser would not
    tree = ast.parse(text.lstrip(" \t"), mode="eval")  # SyntaxError exactly where eval's is
    try:
        return float(_arith(tree.body))
    except _NotArithmetic:
        pass
    code = (
        "import re\n"
        f"_value = float(eval({text!r}, {{'re': re}}))\n"
        f"print({_MARK!r} + repr(_value))\n"
    )
    result = run_cell("tablereason", EVAL_LIMITS, code)
    lines = result.stdout.splitlines()
    if not result.ok or not lines or not lines[-1].startswith(_MARK):
        raise ValueError(f"not a number: {result.error or result.status}")
    return float(lines[-1][len(_MARK) :])


def check_single_answer(answer: str, ground_truth: str) -> bool:
    try:
        nanswer = (
            answer.replace(",", "")
            .replace("%", " / 100")
            .replace("$", "")
            .replace(":", "/")
            .replace("\\", "")
        )
        return math_equal(eval_float(nanswer), ground_truth, tolerance=1e-3)
    except Exception:  # noqa: BLE001 - not a number: full string match (seed's bare except)
        return is_equiv(answer, ground_truth)


def drop_latex_text(answer: str) -> str:
    # the seed's patterns match a *double* backslash before "text{" and double backslashes
    answer = re.sub(r"\\\\text\{([^}]*)\}", r"\1", answer)
    return re.sub(r"\\\\", r"", answer)


def compute_score(model_output, ground_truth, extra_info: dict | None = None) -> dict:
    model_output = str(model_output).lower()
    ground_truth = str(ground_truth).lower()
    solution_str = model_output.split("</think>")[-1]
    answer_str = last_boxed_only_string(solution_str)
    if answer_str is not None:
        answer = drop_latex_text(remove_boxed(answer_str))
    else:
        answer = solution_str

    if "|" not in ground_truth:
        score = check_single_answer(answer, ground_truth)
    else:
        try:
            truths = sorted(ans.strip() for ans in ground_truth.split("|"))
            answers = sorted(ans.strip() for ans in answer.split("|"))
            if len(truths) != len(answers):
                score = 0
            else:
                score = 1
                for truth, res in zip(truths, answers, strict=True):
                    score = check_single_answer(res, truth)
                    if not score:
                        break
        except Exception:  # noqa: BLE001 - as the seed
            return {"score": 0, "acc": 0}
    return {"score": score, "acc": score}
