"""TIR GRPO training through ftlab.launch with 2 processes (gloo on CPU), the path of the
train_tir rule on several GPUs: the trainer runs in both processes (each rank's rollouts go
through the multi-turn loop and the sandbox), rank 0 publishes the checkpoints once, in the
same layout as a 1-process run, with the process count in the run's fingerprint inputs.
(GRPO samples with each rank's own generator, so the weights are not compared with 1 process;
the equality of the launch path itself is test_ddp_llm's.)"""

import json

import pytest
import yaml

from ftlab import launch
from ftlab.config import validate_config
from ftlab.io import write_jsonl
from ftlab.llm.tiny import build_tiny_causal_lm
from ftlab.tir.tasks import arith_problems

pytestmark = pytest.mark.slow
CONFIG = "tests/config_tir_tiny.yaml"


def train(root, repo, base, rows, processes):
    cfg = validate_config(yaml.safe_load((repo / CONFIG).read_text()))
    tir = cfg["tir"]
    kw = {
        "run": {"tools": True, "mask_void_turns": True, "max_turns": 2},
        "grpo": {**tir["grpo"], "batch_size": 2, "max_new_tokens": 16, "max_completion_length": 48},
        "base_model": str(base),
        "rows_path": str(rows),
        "prompt_template": tir["prompt_template"],
        "sandbox": tir["sandbox"],
        "scorer": tir["reward"],
        "seed": 1,
        "out_dir": str(root / "models/multiturn"),
        "state_dir": str(root / "train_state/multiturn"),
    }
    plan = launch.plan_for("train", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.tir.steps:train", kwargs=kw, payload_path=root / "launch.json")
    return root / "models/multiturn"


def test_two_process_tir_grpo_publishes_once_in_the_one_process_layout(tmp_path, repo):
    base = build_tiny_causal_lm(tmp_path / "base", seed=0, layers=2, hidden=32, max_length=256)
    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, arith_problems(8, seed=8))
    one = train(tmp_path / "one", repo, base, rows, processes=1)
    two = train(tmp_path / "two", repo, base, rows, processes=2)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    names = {p.name for p in (two / "checkpoint-2").iterdir()}
    assert names == {p.name for p in (one / "checkpoint-2").iterdir()}
    assert not any(n.startswith("rng_state") for n in names)
    info1 = json.loads((one / "checkpoint-2/ftlab_checkpoint.json").read_text())
    info2 = json.loads((two / "checkpoint-2/ftlab_checkpoint.json").read_text())
    assert info2["processes"] == 2 and "processes" not in info1
    assert info2["method"] == info1["method"] == "tir_grpo"
    assert info2["fingerprint"] != info1["fingerprint"]  # another global batch: not resumed
