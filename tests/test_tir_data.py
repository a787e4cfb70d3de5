"""TIR problem rows from local sources through the real data step (ftlab.tir.steps.prepare_rows,
reading with ftlab.llm.sources): a jsonl file, a parquet folder under tir.data_root laid out as
SimpleTIR's datasets/ (question in prompt[0].content, answer in reward_model.ground_truth), a
list of sources, and the errors that name the config key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ftlab.config import ConfigError, validate_config
from ftlab.io import read_jsonl
from ftlab.tir.steps import field_value, prepare_rows

REPO = Path(__file__).resolve().parents[1]
SIMPLETIR_FIELDS = {
    "question_field": "prompt.0.content",
    "answer_field": "reward_model.ground_truth",
}


def config(datasets: dict) -> dict:
    return {"kind": "tir", "study": "s", "tir": {
        "datasets": datasets, "eval": {"datasets": list(datasets), "samplings": {"s": {"n": 1}}},
    }}  # fmt: skip


def spec(source, **kw) -> dict:
    """A dataset entry with the schema's defaults filled in (as the data rule gets it)."""
    return validate_config(config({"d": {"source": source, **kw}}))["tir"]["datasets"]["d"]


def simpletir_rows(questions_answers, source="deepscaler"):
    """Rows shaped as SimpleTIR's parquet files (datasets/deepscaler/aime.parquet)."""
    return [
        {
            "data_source": source,
            "prompt": [{"content": q, "role": "user"}],
            "ability": "math",
            "reward_model": {"ground_truth": a, "style": "rule"},
            "extra_info": {"index": i, "split": "test"},
        }
        for i, (q, a) in enumerate(questions_answers)
    ]


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_a_jsonl_file_source(tmp_path):
    src = tmp_path / "problems.jsonl"
    src.write_text(
        "".join(json.dumps({"problem": f"{i} + 1?", "answer": i + 1}) + "\n" for i in range(3))
    )
    out = tmp_path / "rows.jsonl"
    prepare_rows("mine", spec(str(src)), str(out))
    assert read_jsonl(out) == [
        {"id": f"mine-{i}", "question": f"{i} + 1?", "answer": str(i + 1)} for i in range(3)
    ]


def test_simpletirs_parquet_folder_under_data_root(tmp_path):
    root = tmp_path / "datasets"
    qa = [("Find $x$ if $x+1=205$.", "204"), ("What is $2^{10}$?", "1024")]
    write_parquet(root / "deepscaler/aime.parquet", simpletir_rows(qa))
    out = tmp_path / "rows.jsonl"
    prepare_rows("aime", spec("deepscaler", split="aime", **SIMPLETIR_FIELDS), str(out),
                 data_root=str(root))  # fmt: skip
    assert read_jsonl(out) == [
        {"id": f"aime-{i}", "question": q, "answer": a} for i, (q, a) in enumerate(qa)
    ]


def test_a_list_of_sources_is_concatenated_in_order(tmp_path):
    # SimpleTIR trains on "simplelr_math_35/train deepscaler/train": two files, one dataset
    root = tmp_path / "datasets"
    write_parquet(root / "simplelr_math_35/train.parquet", simpletir_rows([("a?", "1")]))
    write_parquet(root / "deepscaler/train.parquet", simpletir_rows([("b?", "2"), ("c?", "3")]))
    out = tmp_path / "rows.jsonl"
    sources = [{"path": "simplelr_math_35"}, {"path": "deepscaler"}]
    prepare_rows("train", spec(sources, split="train", limit=2, **SIMPLETIR_FIELDS), str(out),
                 data_root=str(root))  # fmt: skip
    assert [(r["question"], r["answer"]) for r in read_jsonl(out)] == [("a?", "1"), ("b?", "2")]


def test_a_missing_field_names_the_key_and_what_is_there(tmp_path):
    write_parquet(tmp_path / "d/test.parquet", simpletir_rows([("q", "1")]))
    with pytest.raises(ValueError, match=r"tir.datasets.d: row 0 has no field 'problem'.*"
                       r"'problem' is not in the row \(\['ability', 'data_source'"):  # fmt: skip
        prepare_rows("d", spec(str(tmp_path / "d")), str(tmp_path / "rows.jsonl"))
    with pytest.raises(ValueError, match=r"'prompt.1.content'.*'1' is not in prompt \(a list of 1"):
        prepare_rows("d", spec(str(tmp_path / "d"), question_field="prompt.1.content"),
                     str(tmp_path / "rows.jsonl"))  # fmt: skip


def test_a_missing_source_names_the_config_key(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match=r"tir.datasets.x.source.*no 'aime' split"):
        prepare_rows("x", spec(str(tmp_path / "d"), split="aime"), str(tmp_path / "rows.jsonl"))


def test_field_value_paths():
    row = {"a.b": 1, "a": {"b": 2}, "p": [{"c": "x"}]}
    assert field_value(row, "a.b") == 1  # a top-level name with a dot wins
    assert field_value(row, "p.0.c") == "x"
    with pytest.raises(KeyError, match=r"'c' is not in p.0.c|'d' is not in p.0 \(\['c'\]\)"):
        field_value(row, "p.0.d")


def test_builtin_sources_other_than_arith_are_refused():
    cfg = config({"a": {"source": "builtin:arith"}, "b": {"source": ["builtin:gsm8k"]}})
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).splitlines()[1:] == [
        "  'tir.datasets.b.source': builtin:gsm8k is not a TIR source "
        "(builtin:arith is, on its own)"
    ]
    cfg["tir"]["datasets"]["b"]["source"] = [{"path": "x", "subset": "a", "subsets": ["b"]}]
    with pytest.raises(ConfigError, match=r"tir.datasets.b.source\[0\]': give 'subset' or"):
        validate_config(cfg)


@pytest.mark.slow
def test_the_data_rule_reads_a_parquet_folder_under_data_root(tmp_path):
    """The workflow's tir_dataset rule passes tir.data_root to the data step."""
    root = tmp_path / "datasets"
    write_parquet(root / "deepscaler/aime25.parquet", simpletir_rows([("q1", "70"), ("q2", "8")]))
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["data_root"] = str(root)
    cfg["tir"]["datasets"]["aime25"] = {"source": "deepscaler", "split": "aime25",
                                        **SIMPLETIR_FIELDS}  # fmt: skip
    configfile = tmp_path / "c.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    target = "results/tir_tiny/data/aime25/rows.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--cores", "1", target, "--configfile", str(configfile)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert read_jsonl(tmp_path / target) == [
        {"id": "aime25-0", "question": "q1", "answer": "70"},
        {"id": "aime25-1", "question": "q2", "answer": "8"},
    ]


def test_preflight_names_a_missing_model_and_each_missing_source(tmp_path, capsys):
    """`ftlab validate` runs the TIR preflight: every problem named by its key, none fatal
    alone; a good study passes it."""
    from ftlab import cli
    from ftlab.tir.study import preflight

    root = tmp_path / "datasets"
    write_parquet(root / "deepscaler/aime.parquet", simpletir_rows([("1+1?", "2")]))
    raw = config({
        "aime": {"source": "deepscaler", "split": "aime", **SIMPLETIR_FIELDS},
        "gone": {"source": [str(tmp_path / "nope.jsonl"), "deepscaler"], "split": "train"},
        "arith": {"source": "builtin:arith"},
    })  # fmt: skip
    raw["tir"] |= {"data_root": str(root), "base_model": str(tmp_path / "no_model")}
    raw["tir"]["eval"]["models"] = {"other": str(tmp_path / "other_model")}
    problems = preflight(validate_config(raw))
    assert problems[:2] == [
        f"'tir.base_model': model path '{tmp_path / 'no_model'}' does not exist",
        f"'tir.eval.models.other': model path '{tmp_path / 'other_model'}' does not exist",
    ]
    assert len(problems) == 4, problems  # nope.jsonl, and deepscaler has no train split
    assert problems[2].startswith("'tir.datasets.gone.source': ") and "nope.jsonl" in problems[2]
    assert problems[3].startswith("'tir.datasets.gone.source': ") and "train" in problems[3]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["validate", str(path)]) == 3
    assert "preflight: 4 problem(s)" in capsys.readouterr().err
    good = {**raw, "tir": {**raw["tir"], "base_model": "tiny", "eval": {
        **raw["tir"]["eval"], "models": {}, "datasets": ["aime"]}}}  # fmt: skip
    del good["tir"]["datasets"]["gone"]
    assert preflight(validate_config(good)) == []
