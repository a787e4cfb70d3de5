"""A bad mtl dataset names its own config key (mtl.datasets...), not the llm kind's."""

import pytest

from ftlab.mtl.steps import prepare_task_dataset


def test_a_missing_mtl_source_names_the_mtl_key(tmp_path):
    spec = {"format": "gsm8k", "train": str(tmp_path / "nope.jsonl"), "train_split": "train",
            "limit_train": None}  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"config key 'mtl\.datasets\.arith\.train'"):
        prepare_task_dataset("arith", str(tmp_path / "rows.jsonl"), spec=spec, seed=0)
    assert not (tmp_path / "rows.jsonl").exists()
