"""Answer extraction of the Qwen math evaluation toolkit, as SimpleTIR grades with it:
extract_answer(text, data_name="math") and the strip_string it ends with
(recipe/simpletir/utils/reward_score/qwen_math_eval_toolkit/parser.py at ltzheng/SimpleTIR
e7b5b44). Ported for data_name "math" only; the quirks are kept on purpose (for instance the
unit words are regular expressions, "and" is removed anywhere, and the quote removal is a
no-op there), because the verdicts must be the reference's.
"""

from __future__ import annotations

import re

# unit words removed from an answer (mainly from MathQA), each also with an "s" (regexes)
# fmt: off
_UNITS = [
    'east', 'degree', 'mph', 'kmph', 'ft', 'm sqaure', ' m east', 'sq m', 'deg', 'mile', 'q .',
    'monkey', 'prime', 'ratio', 'profit of rs', 'rd', 'o', 'gm', 'p . m', 'lb', 'tile', 'per',
    'dm', 'lt', 'gain', 'ab', 'way', 'west', 'a .', 'b .', 'c .', 'd .', 'e .', 'f .', 'g .',
    'h .', 't', 'a', 'h', 'no change', 'men', 'soldier', 'pie', 'bc', 'excess', 'st', 'inches',
    'noon', 'percent', 'by', 'gal', 'kmh', 'c', 'acre', 'rise', 'a . m', 'th', 'π r 2', 'sq',
    'mark', 'l', 'toy', 'coin', 'sq . m', 'gallon', '° f', 'profit', 'minw', 'yr', 'women',
    'feet', 'am', 'pm', 'hr', 'cu cm', 'square', 'v â € ™', 'are', 'rupee', 'rounds', 'cubic',
    'cc', 'mtr', 's', 'ohm', 'number', 'kmph', 'day', 'hour', 'minute', 'min', 'second', 'man',
    'woman', 'sec', 'cube', 'mt', 'sq inch', 'mp', '∏ cm ³', 'hectare', 'more', 'sec', 'unit',
    'cu . m', 'cm 2', 'rs .', 'rs', 'kg', 'g', 'month', 'km', 'm', 'cm', 'mm', 'apple', 'liter',
    'loss', 'yard', 'pure', 'year', 'increase', 'decrease', 'd', 'less', 'Surface', 'litre',
    'pi sq m', 's .', 'metre', 'meter', 'inch',
]
# fmt: on
UNIT_TEXTS = _UNITS + [u + "s" for u in _UNITS]
_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_answer(pred_str: str, use_last_number: bool = True) -> str:
    """The predicted answer of a solution (extract_answer with data_name "math"): the content
    of the last "boxed", else what follows the last "he answer is" / "final answer is", else
    the last number; normalized by strip_string. "" when there is none."""
    pred_str = pred_str.replace("\u043a\u0438", "")
    if "final answer is $" in pred_str and "$. I hope" in pred_str:  # minerva_math style
        pred = pred_str.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in pred_str:
        tail = pred_str.split("boxed")[-1]
        if not tail:
            return ""
        pred = _braced(tail[1:]) if tail[0] == "{" else tail.split("$")[0].strip()
    elif "he answer is" in pred_str:
        pred = pred_str.split("he answer is")[-1].strip()
    elif "final answer is" in pred_str:
        pred = pred_str.split("final answer is")[-1].strip()
    elif "\u7b54\u6848\u662f" in pred_str:  # Chinese "the answer is"
        pred = pred_str.split("\u7b54\u6848\u662f")[1].strip().split("\n\n")[0].strip()
    elif use_last_number:
        numbers = _LAST_NUMBER.findall(pred_str.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    else:
        pred = ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred[:1] == ":":
        pred = pred[1:]
    if pred[-1:] == ".":
        pred = pred[:-1]
    if pred[-1:] == "/":
        pred = pred[:-1]
    return strip_string(pred)


def _braced(text: str) -> str:
    """The text up to the brace that closes an already opened one (or all of it)."""
    depth, out = 1, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(ch)
    return "".join(out)


def _word_number(text: str) -> str:
    from word2number import w2n

    try:
        return str(w2n.word_to_num(text))
    except Exception:  # the toolkit ignores every failure here
        return text


def strip_string(string, skip_unit: bool = False) -> str:
    s = str(string).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    no_text_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if no_text_unit != "" and no_text_unit != s:
        s = no_text_unit
    if not skip_unit:
        for _ in range(2):
            for unit in UNIT_TEXTS:
                cut = re.sub(r"(^|\W)" + unit + r"($|\W)", r"\1\2", s)
                if cut != "":
                    s = cut
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = _word_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", r"{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.isalnum() and (s[:1], s[-1:]) in (("{", "}"), ("(", ")"), ("[", "]")):
        s = s[1:-1]  # never true (brackets are not alphanumeric), as in the toolkit
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


def _fix_fracs(string: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1b -> \frac{1}{b}, \frac1{72} -> \frac{1}{72}."""
    head, *parts = string.split("\\frac")
    out = head
    for part in parts:
        out += "\\frac"
        if part[:1] == "{":
            out += part
            continue
        if len(part) < 2:
            return string
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + ("{" + b + "}" + rest if b != "{" else b + rest)
    return out


def _fix_a_slash_b(string: str) -> str:
    r"""a/b with integers a, b (or sqrt terms) -> \frac{a}{b}."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    a, b = parts
    try:
        if "sqrt" not in a:
            a = int(a)
        if "sqrt" not in b:
            b = int(b)
        if string != f"{a}/{b}":
            return string
        return "\\frac{" + str(a) + "}{" + str(b) + "}"
    except Exception:
        return string
