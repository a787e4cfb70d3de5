"""`ftlab validate` of a multi-task study: the job shape the workflow would refuse is refused by
the config check too, and the sft/grpo preflight names each missing model, source and task."""

from pathlib import Path

import pytest
import yaml

from ftlab.config import ConfigError, validate_config
from ftlab.mtl.study import preflight

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def load(name: str) -> dict:
    return yaml.safe_load((TESTS / name).read_text())


def test_several_processes_for_the_world_objective_is_a_config_error():
    raw = load("config_mtl_tiny.yaml")
    raw["resources"] = {"train": {"processes": 2}}
    with pytest.raises(ConfigError, match=r"mtl.objective world trains in one process"):
        validate_config(raw)
    raw["resources"] = {"train": {"processes": 1}}
    validate_config(raw)


def test_a_sharded_strategy_for_gradient_surgery_is_a_config_error():
    raw = load("config_mtl_sft_tiny.yaml")
    raw["resources"] = {"train": {"gpus": 2, "strategy": "fsdp"}}
    with pytest.raises(ConfigError, match=r"'resources.train.strategy' is 'fsdp'"):
        validate_config(raw)
    raw["resources"]["train"]["strategy"] = "ddp"
    validate_config(raw)


def test_sft_preflight_names_each_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the tiny config's include_path is relative to the repository
    raw = load("config_mtl_sft_tiny.yaml")
    assert preflight(validate_config(raw)) == []
    raw["mtl"]["base_model"] = str(tmp_path / "no_model")
    raw["mtl"]["datasets"]["trivia"]["train"] = str(tmp_path / "nope.jsonl")
    raw["mtl"]["eval"]["suite"]["knowledge"] = ["ftlab_tiny_mc", "ftlab_no_such_task"]
    raw["mtl"]["eval"]["metrics"]["ftlab_no_such_task"] = "acc"
    problems = preflight(validate_config(raw))
    assert len(problems) == 3, problems
    assert problems[0] == f"'mtl.base_model': model path '{tmp_path / 'no_model'}' does not exist"
    assert problems[1].startswith("'mtl.datasets.trivia.train': ") and "nope.jsonl" in problems[1]
    assert "'ftlab_no_such_task' (mtl.eval.suite) does not exist" in problems[2]
    raw["mtl"]["eval"]["lm_eval"]["include_path"] = str(tmp_path / "tasks")
    assert preflight(validate_config(raw))[-1] == (
        f"'mtl.eval.lm_eval.include_path': '{tmp_path / 'tasks'}' is not a folder (of lm-eval "
        "task YAMLs)"
    )


def test_world_objective_has_nothing_to_fetch():
    assert preflight(validate_config(load("config_mtl_tiny.yaml"))) == []
