r"""Answer extraction, normalisation and scoring; GRPO reward functions.

Metrics (seed 001): correct, partial (numeric answer within 10% relative of the gold one; for
TriviaQA the same as correct) and format (the completion is exactly
<reasoning>...</reasoning> <answer>...</answer>, one of each).

"correct" follows lm-eval's checkers of these benchmarks (seed 003 does not define its own):
- MATH: lm-eval's hendrycks_math ``is_equiv`` (``strip_string``: \frac12 = \frac{1}{2},
  \sqrt2, "x = 5", "5 \text{ cm}", 0.5, a/b ...) of the extracted answer (the text between its
  first and last "$", as hendrycks_math's process_results) and the gold \boxed{} answer;
  a \boxed{} answer is unboxed with lm-eval's ``last_boxed_only_string`` / ``remove_boxed``.
- GSM8K: lm-eval's gsm8k "flexible-extract" regex (the last number) on the extracted answer,
  then its exact_match (ignoring ",", "$", a trailing "." and case) against the gold number.
- TriviaQA: SQuAD-style normalisation, any alias.
lm-eval is imported lazily (the llm extra installs it).
"""

from __future__ import annotations

import re
import string

from ftlab.llm.data import FORMATS

PARTIAL_TOLERANCE = 0.10

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC_RE = re.compile(r"([-+]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
# One <reasoning> then one <answer>, neither containing a tag, nothing else around.
_NO_TAG = r"(?:(?!</?(?:reasoning|answer)>).)+"
_FORMAT_RE = re.compile(
    rf"\s*<reasoning>({_NO_TAG})</reasoning>\s*<answer>({_NO_TAG})</answer>\s*", re.DOTALL
)

# lm_eval/tasks/gsm8k/gsm8k.yaml: the flexible-extract filter (regex, group_select -1) and the
# exact_match metric's options (tests/test_llm_rewards.py checks them against the installed file)
GSM8K_FLEXIBLE_REGEX = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def _lm_eval_math():
    """lm-eval's hendrycks_math utils (is_equiv, strip_string, last_boxed_only_string, ...)."""
    try:
        from lm_eval.tasks.hendrycks_math import utils
    except ImportError as e:  # pragma: no cover - the llm extra installs lm-eval
        raise RuntimeError(
            "answer checking uses lm-eval's hendrycks_math checker: pip install ftlab[llm]"
        ) from e
    return utils


def unbox(text: str) -> str | None:
    r"""The content of the last \boxed{...} / \fbox{...} (lm-eval's last_boxed_only_string then
    remove_boxed), or None."""
    u = _lm_eval_math()
    boxed = u.last_boxed_only_string(text)
    if boxed is None:
        return None
    try:
        return u.remove_boxed(boxed)
    except AssertionError:  # "\fbox{...}": remove_boxed knows only \boxed
        i = boxed.find("{")
        return boxed[i + 1 : -1] if i >= 0 and boxed.endswith("}") else None


def gsm8k_number(text: str | None) -> str | None:
    """The last number of text as lm-eval's gsm8k flexible-extract finds it (raw, e.g.
    "$1,000."), or None."""
    if text is None:
        return None
    found = re.findall(GSM8K_FLEXIBLE_REGEX, text)
    if not found:
        return None
    match = [m for m in found[-1] if m]
    return match[0].strip() if match else None


def _gsm8k_clean(s: str) -> str:
    """lm-eval gsm8k exact_match's view of a string: regexes_to_ignore removed, lower case."""
    for pattern in GSM8K_IGNORE:
        s = re.sub(pattern, "", s)
    return s.lower()


def _math_span(s: str) -> str:
    """hendrycks_math process_results: the text between the first and last "$" if any."""
    idx = [i for i, ch in enumerate(s) if ch == "$"]
    return s[idx[0] + 1 : idx[-1]] if len(idx) > 1 else s


def extract_answer(text: str, fmt: str, require_tag: bool = False) -> str | None:
    r"""The final answer in a completion, or None.

    The last complete <answer>...</answer>, unboxed when it holds a \boxed{} (math formats).
    Without one (None when require_tag): TriviaQA the first non-empty line; GSM8K "#### N",
    else the last \boxed{}, else the last number (lm-eval's flexible-extract); MATH the last
    \boxed{}, else the whole text (what hendrycks_math compares).
    """
    _check_fmt(fmt)
    tagged = _ANSWER_RE.findall(text)
    if tagged:
        ans = tagged[-1].strip()
        if fmt != "triviaqa" and ("\\boxed" in ans or "\\fbox" in ans):
            ans = unbox(ans) or ans
        return ans.strip() or None
    if require_tag:
        return None
    if fmt == "triviaqa":
        for line in text.splitlines():
            if line.strip():
                return line.strip()
        return None
    if fmt == "gsm8k":
        m = _HASH_RE.search(text)
        if m:
            return m.group(1).strip()
    boxed = unbox(text)
    if boxed:
        return boxed.strip()
    if fmt == "gsm8k":
        return gsm8k_number(text)
    return text.strip() or None


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

    "$" and "%" are ignored, and commas: for gsm8k all, for math only as thousands separators
    ("1,000"; "1,2" is a list, not a number); for gsm8k trailing unit words are too ("18
    dollars"). \\frac{a}{b} and a/b are divided out. "2x" is not a number.
    """
    if text is None:
        return None
    s = _strip_latex(text).replace("%", "").strip().rstrip(".").strip()
    if fmt == "gsm8k" or _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
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
    """Whether an extracted answer is right: lm-eval's checker of the format (module doc);
    TriviaQA: SQuAD-normalised exact match with any alias."""
    if pred is None:
        return False
    _check_fmt(fmt)
    if fmt == "triviaqa":
        p = normalize(pred, fmt)
        return bool(p) and p in {normalize(a, fmt) for a in _gold_answers(row, fmt)}
    gold = str(row["answer"])
    if fmt == "math":
        return bool(_lm_eval_math().is_equiv(_math_span(pred), gold))
    number = gsm8k_number(pred)
    return number is not None and _gsm8k_clean(number) == _gsm8k_clean(gold)


def _numeric(pred: str, fmt: str) -> float | None:
    if fmt == "gsm8k":
        return to_number(gsm8k_number(pred), fmt)
    return to_number(_math_span(pred), fmt)


def is_partial(pred: str | None, row: dict, fmt: str) -> bool:
    """Correct, or a numeric answer within 10% (relative, inclusive) of the gold one (the
    number is the one the correctness check reads); TriviaQA = correct."""
    if fmt == "triviaqa" or is_correct(pred, row, fmt):
        return is_correct(pred, row, fmt)
    p, g = _numeric(pred, fmt), to_number(str(row["answer"]), fmt)
    if p is None or g is None:
        return False
    # A tiny epsilon so that exactly 10% off still counts despite float rounding.
    return abs(p - g) <= PARTIAL_TOLERANCE * abs(g) + 1e-9


def has_format(text: str) -> bool:
    """Exactly one <reasoning>...</reasoning> then one <answer>...</answer> (neither holding
    a tag), with only whitespace around."""
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
    """1.0 for a correct final answer inside a closed <answer>...</answer>, else 0.0 (an
    untagged or cut-off completion earns nothing: no last-number fallback, which would reward
    text cut off at max_completion_length). Needs columns "answer" and "fmt"."""
    if "answer" not in kwargs or "fmt" not in kwargs:
        raise KeyError("correctness_reward needs dataset columns 'answer' and 'fmt'")
    n = len(completions)
    aliases = kwargs.get("aliases") or [[]] * n
    rewards = []
    for c, answer, fmt, al in zip(
        completions, kwargs["answer"], kwargs["fmt"], aliases, strict=True
    ):
        row = {"answer": answer, "aliases": al or []}
        pred = extract_answer(_completion_text(c), fmt, require_tag=True)
        rewards.append(float(is_correct(pred, row, fmt)))
    return rewards


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion has the exact reasoning/answer tag structure, else 0.0."""
    return [float(has_format(_completion_text(c))) for c in completions]


# -- seed 003's reward (llm.prompt_format: seed003) ---------------------------------------------
# src/rewards/unified_reward.py of GitHub Emilianopp/forgetting-llms @ 9187362, rule for rule:
# its GRPO reward (VeRL compute_score) and its teacher check (a sample is kept when > 0.5).
# Correctness only (no format term). Quirks kept as the seed has them: an answer that
# normalises to "" is "contained" in every alias (1.0); MATH answers are compared as numbers
# or as exact strings (no LaTeX equivalence).
_SEED003_QA_MARKER_RE = re.compile(r"[Tt]he answer is:\s*(.+?)(?:\.|$)", re.DOTALL)


def _seed003_number(s: str) -> str:
    """unified_reward.normalize_number."""
    s = s.strip().replace(",", "").replace(" ", "")
    s = re.sub(r"\.0+$", "", s)
    try:
        val = float(s)
        if val == int(val):
            return str(int(val))
        return str(val)
    except (ValueError, OverflowError):
        return s


def seed003_math_score(text: str, gold: str) -> float:
    r"""unified_reward.math_score: the last one-level \boxed{} (else the first "#### N"),
    equal to the gold answer as a normalised number or as a stripped string."""
    answer = _seed003_math_answer(text)
    if answer is None:
        return 0.0
    if _seed003_number(answer) == _seed003_number(gold):
        return 1.0
    return 1.0 if answer.strip() == gold.strip() else 0.0


def _seed003_qa_answer(text: str) -> str:
    m = _SEED003_QA_MARKER_RE.search(text)
    if m:
        return m.group(1).strip()
    lines = text.strip().split("\n")  # no marker: the last line
    return lines[-1].strip() if lines else text.strip()


def _seed003_qa_norm(s: str) -> str:
    s = s.lower().strip()
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    s = re.sub(r"[^\w\s]", "", s)
    return re.sub(r"\s+", " ", s).strip()


def _seed003_f1(prediction: str, reference: str) -> float:
    pred, ref = _seed003_qa_norm(prediction).split(), _seed003_qa_norm(reference).split()
    common = set(pred) & set(ref)
    if not pred or not ref or not common:
        return 0.0
    precision, recall = len(common) / len(pred), len(common) / len(ref)
    return 2 * precision * recall / (precision + recall)


def seed003_qa_score(text: str, aliases: list[str]) -> float:
    """unified_reward.qa_score: the text after "The answer is:" (else the last line) matches
    an alias after normalisation, contains one or is contained in one, or has token F1 >= 0.5
    with one."""
    answer = _seed003_qa_answer(text)
    norm = _seed003_qa_norm(answer)
    for alias in aliases:
        a = _seed003_qa_norm(alias)
        if a and (norm == a or a in norm or norm in a):
            return 1.0
    best = max((_seed003_f1(answer, a) for a in aliases), default=0.0)
    return 1.0 if best >= 0.5 else 0.0


def seed003_score(text: str, row: dict, fmt: str) -> float:
    """Seed 003's reward of a completion for a normalised row: math formats against
    row["answer"]; TriviaQA against the row's aliases (its answer when it has none)."""
    _check_fmt(fmt)
    if fmt == "triviaqa":
        return seed003_qa_score(text, list(row.get("aliases") or []) or [str(row["answer"])])
    return seed003_math_score(text, str(row["answer"]))


def seed003_reward(completions, **kwargs) -> list[float]:
    """GRPO reward function of seed 003 (TRL signature; columns "answer", "aliases", "fmt")."""
    if "answer" not in kwargs or "fmt" not in kwargs:
        raise KeyError("seed003_reward needs dataset columns 'answer' and 'fmt'")
    aliases = kwargs.get("aliases") or [[]] * len(completions)
    return [
        seed003_score(_completion_text(c), {"answer": a, "aliases": al or []}, fmt)
        for c, a, fmt, al in zip(completions, kwargs["answer"], kwargs["fmt"], aliases, strict=True)
    ]


def _seed003_math_answer(text: str) -> str | None:
    r"""What seed 003's math reward reads: the last one-level \boxed{} (stripped), else the
    first "#### N" (commas removed), else None."""
    from ftlab.llm.data import SEED003_HASH_RE, SEED_BOXED_RE

    found = SEED_BOXED_RE.findall(text)
    if found:
        return found[-1].strip()
    m = SEED003_HASH_RE.search(text)
    return m.group(1).replace(",", "").strip() if m else None


def seed003_completion_scores(text: str, row: dict, fmt: str) -> dict[str, bool]:
    r"""In-domain scores of a completion to seed 003's prompt (llm.in_domain.prompt_style:
    seed003): correct = seed 003's reward; partial = correct, or (math formats) the answer
    its reward reads a number within 10% of the gold one, as is_partial; format = an answer
    where seed 003's prompt asks for it (math: a one-level \boxed{} or "#### N"; TriviaQA:
    "The answer is:")."""
    _check_fmt(fmt)
    correct = seed003_score(text, row, fmt) > 0.5
    if fmt == "triviaqa":
        marker = _SEED003_QA_MARKER_RE.search(text) is not None
        return {"correct": correct, "partial": correct, "format": marker}
    answer = _seed003_math_answer(text)
    partial = correct
    if not correct and answer is not None:
        p, g = to_number(answer, fmt), to_number(str(row["answer"]), fmt)
        # the same epsilon as is_partial: exactly 10% off counts despite float rounding
        close = p is not None and g is not None
        partial = close and abs(p - g) <= PARTIAL_TOLERANCE * abs(g) + 1e-9
    return {"correct": correct, "partial": partial, "format": answer is not None}
