"""Scoring of generations.jsonl: answer extraction, answer checking and the metrics.

Everything here reads what the rollout loop recorded and nothing else, so a change of scorer
settings (grader, extraction, tolerance) re-scores without re-running the model.

Graders (tir.scoring.grader, tir.reward.grader):
  simpletir (default) - SimpleTIR's (recipe/simpletir/utils/reward_score/hf_math_verify.py):
    the text before the first stop word (<|im_end|>, ...), the answer by the Qwen math
    toolkit's extract_answer(data_name="math") (ftlab.tir.qwen_answer: the last \\boxed{}, else
    what follows "he answer is", else the last number), wrapped in \\boxed{} as the gold answer
    is, both parsed by math_verify and compared by its sympy_expr_eq (float_rounding 6,
    numeric_precision 15);
  ftlab - the transcript's last \\boxed{} (extraction boxed_or_last_number: else the last
    number), numbers compared within abs_tol / rel_tol, other answers after LaTeX
    normalization.
Metrics per
(checkpoint, dataset, sampling):
  pass@k for every k <= n (unbiased estimator, ftlab.tir.passk), mean turns, tool-usage rate
  (samples with at least one executed cell), void-turn rate (void turns / all turns) and
  void-sample rate, answer rate, stop reasons, sandbox outcomes, tokens and per-sample seconds.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ftlab.llm.data import last_boxed
from ftlab.tir.passk import mean_pass_at_k

EXTRACTIONS = ("boxed", "boxed_or_last_number")
GRADERS = ("simpletir", "ftlab")
STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>", "[END]")  # hf_math_verify extract_solution
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


@dataclass(frozen=True)
class Scorer:
    extraction: str = "boxed"  # boxed | boxed_or_last_number (grader ftlab)
    abs_tol: float = 1e-6  # grader ftlab
    rel_tol: float = 1e-9  # grader ftlab
    grader: str = "simpletir"  # simpletir | ftlab

    def __post_init__(self):
        if self.grader not in GRADERS:
            raise ValueError(
                f"scoring.grader must be one of {', '.join(GRADERS)}, not {self.grader!r}"
            )
        if self.extraction not in EXTRACTIONS:
            raise ValueError(
                f"scoring.extraction must be one of {', '.join(EXTRACTIONS)}, not "
                f"{self.extraction!r}"
            )
        if self.abs_tol < 0 or self.rel_tol < 0:
            raise ValueError("scoring.abs_tol and scoring.rel_tol must be >= 0")

    def extract(self, sample: dict) -> str | None:
        """The predicted answer of one recorded sample (None: there is none). Grader ftlab: the
        last \\boxed{} of the transcript (model text and tool output alike), optionally the last
        number as a fallback; grader simpletir: simpletir_extract."""
        text = sample["transcript"]
        if self.grader == "simpletir":
            return simpletir_extract(text) or None
        boxed = last_boxed(text)
        if boxed is not None or self.extraction == "boxed":
            return boxed
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1] if numbers else None

    def correct(self, pred: str | None, gold: str) -> bool:
        if pred is None:
            return False
        if self.grader == "simpletir":
            return math_verify_equal(pred, gold)
        a, b = to_number(pred), to_number(gold)
        if a is not None and b is not None:
            return math.isclose(a, b, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return normalize(pred) == normalize(gold)


def simpletir_extract(text: str) -> str:
    """SimpleTIR's predicted answer (hf_math_verify.py extract_solution): the text from the
    first "<|im_start|>assistant" on, cut at the first stop word, through the Qwen math
    toolkit's extract_answer(data_name="math"); "" when it finds none."""
    from ftlab.tir.qwen_answer import extract_answer

    out = re.sub(r"^.*?<\|im_start\|>assistant", "<|im_start|>assistant", text, count=1,
                 flags=re.DOTALL)  # fmt: skip
    for stop in STOP_WORDS:
        if stop in out:
            out = out.split(stop)[0].strip()
    return extract_answer(out)


def math_verify_equal(pred: str, gold: str) -> bool:
    """SimpleTIR's answer check (hf_math_verify.py compute_score, hf_verify_with_try): both
    wrapped in \\boxed{} unless they hold one, parsed by math_verify.parse, equal when any
    parsed gold and prediction are: sympy_expr_eq(float_rounding=6, numeric_precision=15) for
    two sympy objects, stripped equality for two strings; any failure is False."""
    from itertools import product

    from math_verify import parse
    from math_verify.grader import sympy_expr_eq
    from math_verify.utils import timeout
    from sympy import Basic, MatrixBase

    @timeout(5)
    def same(g, t) -> bool:
        if isinstance(g, Basic | MatrixBase) and isinstance(t, Basic | MatrixBase):
            # the reference passes True as the 5th positional argument: allow_set_relation_comp
            # in math-verify 0.9 (strict keeps its default, True)
            return sympy_expr_eq(g, t, 6, 15, True)
        if isinstance(g, str) and isinstance(t, str):
            g, t = g.strip(), t.strip()
            return len(g) > 0 and len(t) > 0 and g == t
        return False

    def same_or_false(g, t) -> bool:
        try:
            return same(g, t)
        except Exception:
            return False

    target = pred if "\\boxed" in pred else f"\\boxed{{{pred}}}"
    truth = gold if "\\boxed" in gold else f"\\boxed{{{gold}}}"
    try:
        parsed_target, parsed_gold = parse(target), parse(truth)
        golds = parsed_gold if isinstance(parsed_gold, list) else [parsed_gold]
        targets = parsed_target if isinstance(parsed_target, list) else [parsed_target]
        return any(same_or_false(g, t) for g, t in product(golds, targets))
    except Exception:
        return False


def _strip(s: str) -> str:
    s = s.strip().strip("$").strip()
    for cmd in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle", "\\text{}"):
        s = s.replace(cmd, "")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    return s.replace("dfrac", "frac").replace("tfrac", "frac")


def normalize(s: str) -> str:
    """Comparable form of a non-numeric answer: LaTeX spacing/sizing removed, no spaces."""
    return re.sub(r"\s+", "", _strip(s)).rstrip(".").lower()


def to_number(s: str) -> float | None:
    r"""A number from "1,234", "-3.5", "3/4", "\frac{3}{4}", "50\%"; else None."""
    s = _strip(s).replace(" ", "").rstrip(".").removesuffix("\\%").removesuffix("%")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    s = s.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    try:
        if re.fullmatch(r"-?\d+/-?\d+", s):
            return float(Fraction(s))
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)(e-?\d+)?", s):
            return float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def score_samples(samples: list[dict], answers: dict[str, str], scorer: Scorer) -> list[dict]:
    """Per-sample verdicts; `answers` maps problem id -> gold answer."""
    missing = sorted({s["problem_id"] for s in samples} - set(answers))
    if missing:
        raise ValueError(f"generations name problems with no gold answer: {missing[:5]}")
    out = []
    for s in samples:
        pred = scorer.extract(s)
        gold = answers[s["problem_id"]]
        out.append({
            "problem_id": s["problem_id"], "sample": s["sample"], "pred": pred, "gold": gold,
            "correct": scorer.correct(pred, gold), "n_turns": s["n_turns"],
            "stop_reason": s["stop_reason"],
        })  # fmt: skip
    return out


def metrics(samples: list[dict], verdicts: list[dict]) -> dict:
    """Aggregate metrics of one generations file (samples and their verdicts, same order)."""
    if not samples:
        raise ValueError("no samples to score")
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for v in verdicts:
        by_problem[v["problem_id"]].append(v["correct"])
    counts = [(len(c), sum(c)) for c in by_problem.values()]
    n_turns = [s["n_turns"] for s in samples]
    all_turns = sum(n_turns)
    tool_status = Counter(t["tool"]["status"] for s in samples for t in s["turns"] if t["tool"])
    seconds = np.array([s["seconds"] for s in samples], dtype=float)
    passk = mean_pass_at_k(counts)
    return {
        "n_problems": len(by_problem),
        "n_samples": len(samples),
        "samples_per_problem": min(n for n, _ in counts),
        "accuracy": float(np.mean([v["correct"] for v in verdicts])),
        "pass_at_k": {str(k): v for k, v in passk.items()},
        "mean_turns": float(np.mean(n_turns)),
        "tool_usage_rate": float(np.mean([s["n_tool_calls"] > 0 for s in samples])),
        "tool_calls_per_sample": float(np.mean([s["n_tool_calls"] for s in samples])),
        "void_turn_rate": sum(s["n_void_turns"] for s in samples) / all_turns,
        "void_sample_rate": float(np.mean([s["n_void_turns"] > 0 for s in samples])),
        "answer_rate": float(np.mean([v["pred"] is not None for v in verdicts])),
        "stop_reasons": dict(sorted(Counter(s["stop_reason"] for s in samples).items())),
        "tool_status": dict(sorted(tool_status.items())),
        "mean_gen_tokens": float(np.mean([s["gen_tokens"] for s in samples])),
        "mean_obs_tokens": float(np.mean([s["obs_tokens"] for s in samples])),
        "seconds_per_sample": {
            "mean": float(seconds.mean()),
            "p50": float(np.percentile(seconds, 50)),
            "p90": float(np.percentile(seconds, 90)),
            "max": float(seconds.max()),
            "mean_generation": float(np.mean([s["gen_seconds"] for s in samples])),
            "mean_tool": float(np.mean([s["tool_seconds"] for s in samples])),
        },
    }
