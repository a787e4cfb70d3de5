r"""Seed 003's data selection (GitHub Emilianopp/forgetting-llms @ 9187362,
scripts/preprocess_data.py): MATH's gold answer is the last match of its one-level \boxed{}
regex (rows without one are dropped), and TriviaQA's 7,500 train questions are
``Dataset.shuffle(seed=42).select(range(7500))``."""

import json

import pytest

from ftlab.llm import data
from ftlab.llm.sources import parse_sources

NESTED = r"So $x = \boxed{\frac{\sqrt{3}}{2}}$."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),  # one nesting level matches
        (r"$\boxed{ 7 }$", "7"),  # stripped
        (NESTED, None),  # two levels: no match at all
        (r"First $\boxed{4}$, then " + NESTED, "4"),  # the last box that matches
        (r"$\boxed{1}$ and $\boxed{2}$", "2"),  # several: the last
        (r"$\fbox{3}$", None),  # the seed's regex knows \boxed only
        (r"\boxed 5", None),  # no braces
        (r"$\boxed{}$", None),  # empty: the seed drops the row ("" answer)
        (r"$\boxed{a}{b}$", "a"),
    ],
)
def test_seed_boxed_matches_the_seed_regex_semantics(text, expected):
    assert data.seed_boxed(text) == expected
    assert data.boxed_answer(text, "one_level") == expected


def test_balanced_rule_keeps_the_nested_answer():
    assert data.boxed_answer(NESTED, "balanced") == r"\frac{\sqrt{3}}{2}"
    assert data.boxed_answer(r"First $\boxed{4}$, then " + NESTED, "balanced") == (
        r"\frac{\sqrt{3}}{2}"
    )
    with pytest.raises(ValueError, match="unknown boxed rule 'deep'"):
        data.boxed_answer(NESTED, "deep")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_math_rows_filtered_by_the_seed_rule(tmp_path):
    rows = [
        {"problem": "p0", "solution": r"$\boxed{5}$"},
        {"problem": "p1", "solution": NESTED},  # dropped by one_level only
        {"problem": "p2", "solution": "no box"},  # dropped by both
        {"problem": "p3", "solution": r"$\boxed{2}$ then " + NESTED},  # one_level: 2
    ]
    src = parse_sources(_write(tmp_path / "math.jsonl", rows), "train", "k")
    seed, report = data.load_split(src, "math")  # default: seed 003's rule
    assert [(r["question"], r["answer"]) for r in seed] == [("p0", "5"), ("p3", "2")]
    assert report["dropped"] == {"no_boxed_answer": 2} and report["boxed"] == "one_level"
    loose, report = data.load_split(src, "math", boxed="balanced")
    assert [r["answer"] for r in loose] == ["5", r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{3}}{2}"]
    assert report["dropped"] == {"no_boxed_answer": 1}


@pytest.mark.parametrize(("n", "seed"), [(1, 42), (10, 42), (257, 42), (50, 0)])
def test_seed_permutation_is_datasets_shuffle(n, seed):
    from datasets import Dataset

    ds = Dataset.from_dict({"i": list(range(n))})
    assert data.seed_permutation(n, seed) == ds.shuffle(seed=seed)["i"]


def test_triviaqa_subset_is_shuffle_then_select(tmp_path):
    from datasets import Dataset

    raw = [
        {"question_id": f"q{i}", "question": f"Q{i}?", "answer": {"value": f"a{i}", "aliases": []}}
        for i in range(40)
    ]
    src = parse_sources(_write(tmp_path / "tqa.jsonl", raw), "train", "k")
    rows, report = data.load_split(src, "triviaqa", limit=7, shuffle_seed=42)
    expect = Dataset.from_list(raw).shuffle(seed=42).select(range(7))["question_id"]
    assert [r["id"] for r in rows] == expect and report["shuffle_seed"] == 42
    assert expect != [f"q{i}" for i in range(7)]  # the shuffle changed the selection
    first, _ = data.load_split(src, "triviaqa", limit=7)  # default: the sources' order
    assert [r["id"] for r in first] == [f"q{i}" for i in range(7)]
