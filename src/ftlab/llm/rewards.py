"""Answer extraction, normalisation and scoring; GRPO reward functions.

Metrics (seed 001): correct (exact, after normalisation), partial (numeric answer within 10%
relative of the gold one; for TriviaQA the same as correct) and format (the completion is exactly
<reasoning>...</reasoning> <answer>...</answer>).
"""

from __future__ import annotations

import re
import string

from ftlab.llm.data import FORMATS, last_boxed

PARTIAL_TOLERANCE = 0.10

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FORMAT_RE = re.compile(r"\s*<reasoning>(.+?)</reasoning>\s*<answer>(.+?)</answer>\s*", re.DOTALL)
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FRAC_RE = re.compile(r"([-+]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def extract_answer(text: str, fmt: str) -> str | None:
    r"""The final answer in a completion, or None.

    Order: the last complete <answer>...</answer>; then (math formats) "#### N", the last
    \boxed{...}, the last number. TriviaQA without tags: the first non-empty line.
    """
    _check_fmt(fmt)
    tagged = _ANSWER_RE.findall(text)
    if tagged:
        ans = tagged[-1].strip()
        if fmt == "math" and "\\boxed" in ans:
            ans = last_boxed(ans) or ans
        return ans or None
    if fmt == "triviaqa":
        for line in text.splitlines():
            if line.strip():
                return line.strip()
        return None
    m = _HASH_RE.search(text)
    if m:
        return m.group(1).strip()
    boxed = last_boxed(text)
    if boxed:
        return boxed
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _strip_latex(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{([^{}]*)\}", r"\1", s)
    for token in (
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\:",
        "\\$",
        "$",
        "^\\circ",
        "^{\\circ}",
    ):
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    return s


def to_number(text: str | None, fmt: str = "gsm8k") -> float | None:
    """The numeric value of an answer, or None if it is not a plain number.

    Commas, "$" and "%" are ignored; for gsm8k trailing unit words are too ("18 dollars").
    \\frac{a}{b} and a/b are divided out. "2x" is not a number (units only for gsm8k).
    """
    if text is None:
        return None
    s = _strip_latex(text).replace(",", "").replace("%", "").strip().rstrip(".").strip()
    m = _FRAC_RE.fullmatch(s)
    if m:
        num, den = to_number(m.group(2), fmt), to_number(m.group(3), fmt)
        if num is None or not den:
            return None
        return (-1 if m.group(1) == "-" else 1) * num / den
    if re.fullmatch(r"[-+]?\d+\s*/\s*\d+", s):
        num, den = (float(x) for x in s.split("/"))
        return num / den if den else None
    if fmt == "gsm8k":  # "18 dollars", "5 apples"; units are words after the number
        s = re.sub(r"(?<=\d)\s*[A-Za-z][A-Za-z\s.]*$", "", s)
    if _PLAIN_NUMBER_RE.fullmatch(s):
        return float(s)
    return None


def normalize(text: str, fmt: str) -> str:
    """Canonical string form: numbers as their value; trivia SQuAD-style; math LaTeX-light."""
    _check_fmt(fmt)
    if fmt == "triviaqa":
        s = text.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = _ARTICLES_RE.sub(" ", s)
        return " ".join(s.split())
    value = to_number(text, fmt)
    if value is not None:
        return repr(float(value))
    s = _strip_latex(text)
    return re.sub(r"\s+", "", s).rstrip(".")


def _gold_answers(row: dict, fmt: str) -> list[str]:
    answers = [row["answer"]]
    if fmt == "triviaqa":
        answers += list(row.get("aliases") or [])
    return answers


def is_correct(pred: str | None, row: dict, fmt: str) -> bool:
    """Exact match after normalisation (numbers numerically); TriviaQA: any alias."""
    if pred is None:
        return False
    _check_fmt(fmt)
    if fmt == "triviaqa":
        p = normalize(pred, fmt)
        return bool(p) and p in {normalize(a, fmt) for a in _gold_answers(row, fmt)}
    p, g = to_number(pred, fmt), to_number(str(row["answer"]), fmt)
    if p is not None and g is not None:
        return abs(p - g) <= 1e-6 * max(1.0, abs(g))
    return normalize(pred, fmt) == normalize(str(row["answer"]), fmt)


def is_partial(pred: str | None, row: dict, fmt: str) -> bool:
    """Numeric answer within 10% (relative, inclusive) of the gold one; TriviaQA = correct."""
    if fmt == "triviaqa" or is_correct(pred, row, fmt):
        return is_correct(pred, row, fmt)
    p, g = to_number(pred, fmt), to_number(str(row["answer"]), fmt)
    if p is None or g is None:
        return False
    # A tiny epsilon so that exactly 10% off still counts despite float rounding.
    return abs(p - g) <= PARTIAL_TOLERANCE * abs(g) + 1e-9


def has_format(text: str) -> bool:
    """Exactly <reasoning>...</reasoning> then <answer>...</answer>, nothing else around."""
    return _FORMAT_RE.fullmatch(text) is not None


def score_completion(text: str, row: dict, fmt: str) -> dict[str, bool]:
    pred = extract_answer(text, fmt)
    return {
        "correct": is_correct(pred, row, fmt),
        "partial": is_partial(pred, row, fmt),
        "format": has_format(text),
    }


# -- GRPO reward functions (TRL calls them with the batch's dataset columns as kwargs) ----------
def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]  # conversational: a list of messages


def correctness_reward(completions, **kwargs) -> list[float]:
    """1.0 for a correct final answer, else 0.0. Needs columns "answer" and "fmt"."""
    if "answer" not in kwargs or "fmt" not in kwargs:
        raise KeyError("correctness_reward needs dataset columns 'answer' and 'fmt'")
    n = len(completions)
    aliases = kwargs.get("aliases") or [[]] * n
    rewards = []
    for c, answer, fmt, al in zip(
        completions, kwargs["answer"], kwargs["fmt"], aliases, strict=True
    ):
        row = {"answer": answer, "aliases": al or []}
        rewards.append(float(is_correct(extract_answer(_completion_text(c), fmt), row, fmt)))
    return rewards


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion has the exact reasoning/answer tag structure, else 0.0."""
    return [float(has_format(_completion_text(c))) for c in completions]
