"""Dataset sources of the LLM study: hub-like fixture folders (tests/fixtures/hub, written by
tests/fixtures/make_hub_fixtures.py), subsets and splits, several sources per dataset, row
filters counted in the data report, and errors that name the config key."""

import json
from pathlib import Path

import pandas as pd
import pytest

from ftlab.llm import data
from ftlab.llm.sources import Source, parse_sources, resolve
from ftlab.llm.steps import prepare_dataset

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"
MATH_SUBJECTS = {"path": "EleutherAI/hendrycks_math", "subsets": ["algebra", "geometry"]}


def _raw(*parts) -> pd.DataFrame:
    return pd.read_parquet(next((HUB.joinpath(*parts[:-1])).glob(f"{parts[-1]}-*.parquet")))


def test_parse_sources_forms():
    assert parse_sources("openai/gsm8k:main", "train", "k") == [
        Source("openai/gsm8k", "main", "train")
    ]
    assert parse_sources("builtin:gsm8k", "test", "k") == [Source("builtin:gsm8k", None, "test")]
    two = parse_sources({**MATH_SUBJECTS, "split": "test"}, "train", "k")
    assert [(s.subset, s.split) for s in two] == [("algebra", "test"), ("geometry", "test")]
    listed = parse_sources(["a.jsonl", {"path": "x/y", "subset": "s"}], "train", "k")
    assert [s.path for s in listed] == ["a.jsonl", "x/y"]
    with pytest.raises(ValueError, match=r"'k\[1\]'.*'subset' or 'subsets'"):
        parse_sources(["a", {"path": "x", "subset": "s", "subsets": ["t"]}], "train", "k")


def test_gsm8k_main_from_a_hub_like_folder():
    rows, report = data.load_split(parse_sources("openai/gsm8k:main", "train", "k"), "gsm8k",
                                   data_root=str(HUB))  # fmt: skip
    raw = _raw("openai", "gsm8k", "main", "train")
    assert report["read"] == len(raw) == 12
    assert report["dropped"] == {"no_final_answer": 1} and len(rows) == report["kept"] == 11
    assert "####" in report["drop_reasons"]["no_final_answer"]
    # The kept rows are the raw rows minus the planted one, in order, answers from "#### N".
    expect = [r for r in raw.to_dict("records") if "####" in r["answer"]]
    assert [r["question"] for r in rows] == [r["question"] for r in expect]
    assert [r["answer"] for r in rows] == [r["answer"].rsplit("####", 1)[1].strip() for r in expect]
    assert all("<<" not in r["solution"] for r in rows)


def test_math_two_subjects_combined_and_counted():
    sources = parse_sources(MATH_SUBJECTS, "train", "k")
    rows, report = data.load_split(sources, "math", data_root=str(HUB))
    algebra, geometry = (
        _raw("EleutherAI", "hendrycks_math", "algebra", "train"),
        _raw("EleutherAI", "hendrycks_math", "geometry", "train"),
    )
    per = {s["source"]: s for s in report["sources"]}
    assert per["EleutherAI/hendrycks_math:algebra (train)"] == {
        "source": "EleutherAI/hendrycks_math:algebra (train)",
        "read_from": str(HUB / "EleutherAI/hendrycks_math/algebra"),
        "read": len(algebra), "kept": len(algebra) - 1, "dropped": {"no_boxed_answer": 1},
    }  # fmt: skip
    assert per["EleutherAI/hendrycks_math:geometry (train)"]["dropped"] == {}
    assert len(rows) == len(algebra) + len(geometry) - 1 == report["rows"]
    # algebra first, then geometry; ids unique across subjects (no id field in MATH rows)
    assert rows[0]["id"] == "math-algebra-train-0" and rows[-1]["id"].startswith("math-geometry")
    assert len({r["id"] for r in rows}) == len(rows)
    assert rows[-1]["answer"] == str(2 * 4)  # geometry row 4: "\\boxed{8}"


def test_triviaqa_subset_validation_split_and_limit():
    spec = {"path": "mandarjoshi/trivia_qa", "subset": "rc.nocontext"}
    rows, report = data.load_split(parse_sources(spec, "train", "k"), "triviaqa", limit=5,
                                   data_root=str(HUB))  # fmt: skip
    assert report["dropped"] == {"no_answer_value": 1} and report["kept"] == 9
    assert report["rows"] == len(rows) == 5 and report["limit"] == 5
    assert rows[0] == {"id": "tc_0", "question": "Which number comes after 0?", "answer": "1",
                       "aliases": ["1", "number 1"], "solution": "1",
                       "subset": "rc.nocontext"}  # fmt: skip
    val, _ = data.load_split(parse_sources(spec, "validation", "k"), "triviaqa",
                             data_root=str(HUB))  # fmt: skip
    assert [r["id"] for r in val] == ["tc_val_200", "tc_val_201", "tc_val_202", "tc_val_203"]


def test_same_source_twice_is_deduplicated_and_counted():
    src = parse_sources(["openai/gsm8k:main", "openai/gsm8k:main"], "test", "k")
    rows, report = data.load_split(src, "gsm8k", data_root=str(HUB))
    assert report["read"] == 12 and len(rows) == 6 and report["dropped"] == {"duplicate_id": 6}


def test_missing_subset_split_or_offline_hub_named():
    with pytest.raises(
        FileNotFoundError, match=r"no subset folder .*socratic.*subsets there: main"
    ):
        resolve(Source("openai/gsm8k", "socratic", "train"), str(HUB))
    with pytest.raises(FileNotFoundError, match=r"no 'dev' split.*splits there: test, train"):
        resolve(Source("openai/gsm8k", "main", "dev"), str(HUB))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE.*llm.data_root"):
        resolve(Source("openai/gsm8k", "main", "train"), None)  # conftest: hub offline


def test_prepare_dataset_writes_rows_and_report_and_checks_declared_rows(tmp_path):
    spec = {"format": "math", "train": MATH_SUBJECTS, "test": MATH_SUBJECTS,
            "train_split": "train", "test_split": "test", "limit_train": None,
            "limit_test": None, "rows": {"train": 12}}  # fmt: skip
    out = {k: str(tmp_path / f"{k}.json") for k in ("train", "test", "report")}
    prepare_dataset("math", spec, str(HUB), 0, out["train"], out["test"], out["report"])
    report = json.loads(Path(out["report"]).read_text())
    assert report["train"]["rows"] == 12 and report["test"]["rows"] == 6
    assert report["train"]["dropped"] == {"no_boxed_answer": 1}
    assert len(data.read_jsonl(out["train"])) == 12
    with pytest.raises(ValueError, match=r"'llm.datasets.math.rows.train' declares 7397 .* 12"):
        prepare_dataset("math", {**spec, "rows": {"train": 7397}}, str(HUB), 0, out["train"],
                        out["test"], str(tmp_path / "r2.json"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"config key 'llm.datasets.math.test'.*algebra"):
        prepare_dataset("math", {**spec, "test": "EleutherAI/hendrycks_math:algebra",
                                 "test_split": "dev"}, str(HUB), 0, *out.values())  # fmt: skip


def test_a_source_with_only_unusable_rows_says_why(tmp_path):
    bad = tmp_path / "bad.jsonl"
    data.write_jsonl(bad, [{"problem": "p", "solution": "no box"}] * 3)
    with pytest.raises(ValueError, match=r"no row kept \(3 MATH 'solution' has no .*boxed"):
        data.load_rows(str(bad), "math")
