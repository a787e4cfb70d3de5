"""GURU (Reasoning360) rule-based scorers, as the seed's evaluation engine applies them.

The seed (Reasoning360-MTL @6133d10) scores each response of verl.trainer.main_eval with
verl/utils/reward_score/__init__.py default_compute_score(data_source, solution_str,
ground_truth, extra_info), which picks a scorer by the row's data_source (and, for math, by
extra_info["reward_metric"]). `scorer_name` is that dispatch, branch for branch, in the same
order; `compute_score` runs the picked scorer. One module per scorer family mirrors the
seed's file (each module's docstring names it and says what cannot match).

Every result is a dict with exactly the fields the seed's scorer returns ("score" first;
main_eval reads s["score"]). `extra_info=None` is taken as {} (main_eval always passes a
dict; the seed would fail on None).

A data source the seed cannot score (its NotImplementedError), or whose scorer is not ported
here yet, raises UnsupportedSource naming the data source and the scorer.

Ported (seed module -> ftlab module): naive_dapo -> naive_dapo (with prime_math's
normalisation and math_equal -> prime_math), supergpqa/gpqa -> stem, zebra_puzzle/arcagi ->
logic, tablereason -> table, codeio/cruxeval -> simulation, coder1 -> codegen, ifeval ->
ifeval, livebench -> livebench: every scorer the 19 GURU evaluation tasks reach. Not ported:
prime_math's and math_llm_judge's own scorers (math only when extra_info["reward_metric"]
asks), the LLM judges, and the seed's non-GURU sources (gsm8k, math_dapo, geo3k, ...).
"""

from __future__ import annotations

import importlib

__all__ = ["PORTED", "UnsupportedSource", "compute_score", "scorer_name"]


class UnsupportedSource(ValueError):
    """The seed has no scorer for this data source, or ftlab has not ported it."""


# scorer name -> "module:function" under ftlab.mtl.guru
_SCORERS = {
    "naive_dapo": "naive_dapo:compute_score",
    "supergpqa": "stem:supergpqa_score",
    "gpqa": "stem:gpqa_score",
    "zebra_puzzle": "logic:zebra_score",
    "arcagi": "logic:arcagi_score",
    "tablereason": "table:compute_score",
    "codeio": "simulation:codeio_score",
    "cruxeval": "simulation:cruxeval_score",
    "coder1": "codegen:compute_score",
    "ifeval": "ifeval:compute_score",
    "livebench": "livebench:compute_score",
}
PORTED = frozenset(_SCORERS)

_MATH_DAPO_SOURCES = ("lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval")
_NUMINA_SOURCES = (
    "numina_aops_forum", "numina_synthetic_math", "numina_amc_aime", "numina_synthetic_amc",
    "numina_cn_k12", "numina_olympiads",
)  # fmt: skip
_SEARCH_R1_SOURCES = (
    "searchR1_nq", "searchR1_triviaqa", "searchR1_popqa", "searchR1_hotpotqa",
    "searchR1_2wikimultihopqa", "searchR1_musique", "searchR1_bamboogle",
)  # fmt: skip


def _seed_scorer(data_source: str, extra_info: dict) -> str | None:
    """The seed's default_compute_score branch, by the name of the module it imports."""
    ds = data_source
    if ds.startswith("math"):
        metric = extra_info.get("reward_metric", None)
        if metric == "prime_math":
            return "prime_math"
        if metric == "math_llm_judge":
            return "math_llm_judge"
        return "naive_dapo"
    if ds.startswith("codegen"):
        return "coder1"
    if ds.startswith("simulation__codeio"):
        return "codeio"
    if ds.startswith("simulation__cruxeval"):
        return "cruxeval"
    if ds.startswith("simulation__arcagi") or ds.startswith("simulation__barc"):
        return "arcagi"
    if ds.startswith("logic__zebra_puzzle"):
        return "zebra_puzzle"
    if ds.startswith("logic__ordering_puzzle"):
        return "puzzles_dataset"
    if ds.startswith("logic__graph"):
        return "graph_dataset"
    if ds.startswith("table"):
        return "tablereason"
    if ds.startswith("stem__gpqa"):
        return "gpqa" if "no_box" in ds else "supergpqa"
    if ds.startswith("stem__supergpqa"):
        return "supergpqa"
    if ds.startswith("stem_web"):
        return "stem_llm_judge"
    if ds == "ood__ifeval":
        return "ifeval"
    if ds == "ood__livebench":
        return "livebench"
    if ds == "ood__ifbench":
        return "ifbench"
    if ds == "openai/gsm8k":
        return "gsm8k"
    if ds in _MATH_DAPO_SOURCES:
        return "math"
    if ds == "math_dapo" or ds.startswith("aime"):
        return "math_dapo"
    if ds in _NUMINA_SOURCES:
        return "prime_math"
    if ds in ("codecontests", "apps", "codeforces", "taco"):
        return "prime_code"  # main_eval passes no sandbox_fusion_url
    if ds == "hiyouga/geometry3k":
        return "geo3k"
    if ds in _SEARCH_R1_SOURCES:
        return "search_r1_like_qa_em"
    return None


def scorer_name(data_source: str, extra_info: dict | None = None) -> str:
    """The scorer the seed's dispatch picks for this row; UnsupportedSource if none or unported."""
    if not isinstance(data_source, str):
        raise UnsupportedSource(f"data_source must be a string, not {data_source!r}")
    name = _seed_scorer(data_source, extra_info or {})
    if name is None:
        raise UnsupportedSource(
            f"data_source {data_source!r}: the seed's default_compute_score has no scorer for "
            "it (NotImplementedError there)"
        )
    if name not in PORTED:
        raise UnsupportedSource(
            f"data_source {data_source!r}: the seed scores it with {name!r}, which is not "
            f"ported to ftlab.mtl.guru yet (ported: {', '.join(sorted(PORTED))})"
        )
    return name


def compute_score(
    data_source: str, solution: str, ground_truth, extra_info: dict | None = None
) -> dict:
    """Score one response as the seed's default_compute_score does: {"score": float, ...}."""
    name = scorer_name(data_source, extra_info)
    module_name, func_name = _SCORERS[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    result = getattr(module, func_name)(solution, ground_truth, extra_info or {})
    if not isinstance(result, dict):
        # the seed turns a bare number into float(...); main_eval would then fail on s["score"]
        result = {"score": float(result)}
    return result
