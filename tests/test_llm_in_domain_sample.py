"""llm.in_domain.sample: which test rows the in-domain accuracy scores (select_rows), the
rows' "subset" from a multi-subject source, and the selection recorded in the result."""

from pathlib import Path

import pytest

from ftlab.config import validate_config
from ftlab.llm import data
from ftlab.llm.in_domain import evaluate_in_domain, select_rows
from ftlab.llm.sources import parse_sources

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"
SUBJECTS = {"algebra": 50, "geometry": 30, "precalculus": 20}  # MATH-like, in config order


def subject_rows(sizes: dict[str, int]) -> list[dict]:
    """Rows as load_split makes them from a hub source with subsets: subjects concatenated."""
    return [
        {"id": f"math-{s}-test-{i}", "question": f"{s} {i}", "answer": str(i), "subset": s}
        for s, n in sizes.items()
        for i in range(n)
    ]


def test_stratified_sample_is_proportional_seeded_and_recorded():
    rows = subject_rows(SUBJECTS)
    picked, record = select_rows(rows, 10, seed=3)
    # 10 of 100 rows: 50/30/20 % of them (hand-worked: 5, 3, 2)
    assert record == {"sample": "stratified", "seed": 3, "limit": 10, "available": 100,
                      "selected": 10, "per_subset": {"algebra": 5, "geometry": 3,
                                                     "precalculus": 2}}  # fmt: skip
    assert [r["subset"] for r in picked].count("geometry") == 3
    assert len({r["id"] for r in picked}) == 10
    # file order kept; the same seed picks the same rows, another seed other rows
    assert picked == sorted(picked, key=rows.index)
    assert select_rows(rows, 10, seed=3)[0] == picked
    assert select_rows(rows, 10, seed=4)[0] != picked
    # "first" is the old behaviour: all from the first subject
    first, rec = select_rows(rows, 10, sample="first")
    assert first == rows[:10] and rec["per_subset"] == {"algebra": 10} and rec["seed"] is None


def test_largest_remainder_and_edge_cases():
    rows = subject_rows({"a": 7, "b": 2, "c": 1})
    # 5 of 10: exact shares 3.5 / 1.0 / 0.5 -> floors 3 / 1 / 0, one left for the largest
    # remainder, a tie of a and c broken by order of appearance -> 4 / 1 / 0
    assert select_rows(rows, 5)[1]["per_subset"] == {"a": 4, "b": 1}
    # no limit, or a limit above the rows: every row, in order
    assert select_rows(rows, None)[0] == rows and select_rows(rows, 99)[0] == rows
    # rows without a subset: one stratum, a seeded random sample (not the first rows)
    plain = [{"id": str(i), "question": str(i), "answer": str(i)} for i in range(100)]
    picked, record = select_rows(plain, 20, seed=0)
    assert record["per_subset"] == {"": 20} and picked != plain[:20]
    with pytest.raises(ValueError, match="llm.in_domain.sample"):
        select_rows(rows, 5, sample="random")


def test_subjects_of_a_hub_source_are_the_strata():
    sources = parse_sources(
        {"path": "EleutherAI/hendrycks_math", "subsets": ["algebra", "geometry"]}, "test", "k"
    )
    rows, _ = data.load_split(sources, "math", data_root=str(HUB))
    n_alg = sum(r["id"].startswith("math-algebra") for r in rows)
    assert [r["subset"] for r in rows] == ["algebra"] * n_alg + ["geometry"] * (len(rows) - n_alg)
    limit = len(rows) // 2
    picked, record = select_rows(rows, limit, seed=0)
    assert record["per_subset"]["geometry"] >= 1 and record["selected"] == limit


def test_schema_defaults_and_recorded_in_result(tmp_path):
    cfg = validate_config({"kind": "llm", "study": "t", "llm": {"datasets": {"g": {
        "format": "gsm8k", "train": "a", "test": "b"}}}})  # fmt: skip
    assert {k: cfg["llm"]["in_domain"][k] for k in ("sample", "seed")} == {
        "sample": "stratified", "seed": 0}  # fmt: skip
    rows = subject_rows({"algebra": 6, "geometry": 4})
    path = tmp_path / "rows.jsonl"
    data.write_jsonl(path, rows)
    seen = []

    def generate(prompts, max_new_tokens):
        seen.extend(prompts)
        return ["<reasoning>r</reasoning><answer>0</answer>"] * len(prompts)

    out = evaluate_in_domain(
        rows_path=str(path), out_json=str(tmp_path / "o.json"),
        samples_path=str(tmp_path / "s.jsonl"), limit=5, seed=1, model="stub", fmt="math",
        cache_path=str(tmp_path / "c.db"), generate_fn=generate,
    )  # fmt: skip
    assert out["n"] == 5 and len(seen) == 5
    assert out["selection"]["per_subset"] == {"algebra": 3, "geometry": 2}
    assert out["selection"]["seed"] == 1
