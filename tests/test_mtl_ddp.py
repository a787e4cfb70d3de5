"""The sft objective with 2 processes (gloo on CPU) through ftlab.launch, the path of seed
000's 2-GPU job: per-task gradients are all-reduced (weighted by each process's tokens of the
task) before PCGrad projects them, so 2 processes x 2 rows give the 1-process x 4 rows run's
weights within float summation order (tolerance 1e-5 absolute, as tests/test_ddp_llm.py)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_mtl_trl_train import FORMATS, TASKS, TRAINING, TRL, write_rows

from ftlab import launch
from ftlab.llm import tiny

ATOL = 1e-5


def train(root, base, batch_size, processes):
    train_rows, val_rows = write_rows(root)
    kwargs = dict(
        train_rows=train_rows, validation_rows=val_rows, out_dir=str(root / "model"),
        state_dir=str(root / "state"), threads=1, objective="sft", model_name="pcgrad_seed3",
        tasks=TASKS, method="pcgrad", reduction="sum", base_model=base, trl=TRL,
        formats=FORMATS, training={**TRAINING, "epochs": 2, "batch_size": batch_size},
        validation={"every_epochs": 1, "before_training": False, "metric": "loss",
                    "batch_size": 8, "max_new_tokens": None, "temperature": 0.0, "top_p": 1.0},
        early_stopping={"enabled": False, "min_epochs": 0, "patience": 1, "min_delta": 0.0,
                        "mode": "min"},
        checkpoints={"save_every_epochs": 1, "keep_last": 2}, seed=3, device="cpu",
    )  # fmt: skip
    plan = launch.plan_for("train", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.mtl.steps:train_run", kwargs=kwargs,
                     payload_path=root / "launch.json")  # fmt: skip
    return root / "model"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtl_ddp")
    base = tiny.build_tiny_causal_lm(root / "tiny", seed=0, layers=1, hidden=32, heads=2,
                                     max_length=512)  # fmt: skip
    (root / "one").mkdir(), (root / "two").mkdir()
    return train(root / "one", base, 4, 1), train(root / "two", base, 2, 2), base


def test_two_process_pcgrad_equals_one_process_with_the_same_global_batch(runs):
    one, two, base = runs
    start = load_file(f"{base}/model.safetensors")
    for step in (2, 4):
        a = load_file(one / f"checkpoint-{step}/model.safetensors")
        b = load_file(two / f"checkpoint-{step}/model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=ATOL, msg=k)
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 100 * ATOL  # the steps moved the weights far beyond the tolerance
    info = [json.loads((m / "checkpoint-4/ftlab_checkpoint.json").read_text()) for m in (one, two)]
    assert [i["processes"] for i in info] == [1, 2]
    assert info[0]["steps_per_epoch"] == info[1]["steps_per_epoch"] == 2
    vals = [json.loads((m / "mtl_manifest.json").read_text())["validations"] for m in (one, two)]
    assert [v["epoch"] for v in vals[0]] == [v["epoch"] for v in vals[1]] == [1, 2]
    for v1, v2 in zip(vals[0], vals[1], strict=True):
        assert v2["value"] == pytest.approx(v1["value"], abs=1e-4)
