"""TRL SFT with 2 processes (gloo on CPU) through ftlab.launch, the path of a multi-GPU job:
the same global batch (2 processes x 2 rows vs 1 process x 4 rows) gives the same rows per
step (accelerate shards each global batch of the seeded sampler) and the same loss (the
Trainer averages tokens across devices), so the published weights equal the 1-process run's
within float summation order (stated tolerance: 1e-5 absolute; measured ~1e-7)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ftlab import launch
from ftlab.config import validate_config
from ftlab.llm import data, tiny

ATOL = 1e-5


def sft_section(**over) -> dict:
    cfg = validate_config({"kind": "llm", "study": "t", "llm": {"datasets": {"g": {
        "format": "gsm8k", "train": "a", "test": "b"}}}})  # fmt: skip
    return {**cfg["llm"]["sft"], **over}


def train(root, records, base, batch_size, processes):
    kw = {
        "run": {"method": "gt_sft", "dataset": "g", "fmt": "gsm8k", "seed": 1, "trainer": "sft"},
        "recipe": sft_section(
            lr=1e-3, max_steps=4, save_steps=2, batch_size=batch_size, grad_accum=1, max_length=256
        ),  # fmt: skip
        "base": base,
        "data_path": records,
        "out_dir": str(root / "models/sft"),
        "state_dir": str(root / "train_state/sft"),
        "study": "t",
    }
    plan = launch.plan_for("train", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.llm.steps:train_run", kwargs=kw,
                     payload_path=root / "launch.json")  # fmt: skip
    return root / "models/sft"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft2")
    fixtures = data.write_fixtures(root / "fixtures", n_train=16, n_test=8)
    base = tiny.build_tiny_causal_lm(root / "tiny", seed=0, layers=2, hidden=32, heads=2,
                                     max_length=512)  # fmt: skip
    records = root / "records.jsonl"
    data.write_jsonl(records, data.sft_records(data.load_rows(fixtures["gsm8k"], "gsm8k"), "gt"))
    one = train(root / "one", str(records), str(base), batch_size=4, processes=1)
    two = train(root / "two", str(records), str(base), batch_size=2, processes=2)
    return one, two


def test_two_process_sft_equals_one_process_with_the_same_global_batch(runs):
    one, two = runs
    for step in (2, 4):
        a = load_file(one / f"checkpoint-{step}/model.safetensors")
        b = load_file(two / f"checkpoint-{step}/model.safetensors")
        assert a.keys() == b.keys()
        changed = False
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=ATOL, msg=k)
            changed |= not torch.equal(a[k], load_file(one / "checkpoint-2/model.safetensors")[k])
        # the same published layout, written once; optimizer/RNG state of every rank left out
        names = {p.name for p in (two / f"checkpoint-{step}").iterdir()}
        assert names == {p.name for p in (one / f"checkpoint-{step}").iterdir()}
        assert not any(n.startswith("rng_state") for n in names)
    assert changed  # the steps moved the weights
    info = json.loads((two / "checkpoint-4/ftlab_checkpoint.json").read_text())
    assert info["processes"] == 2 and "processes" not in json.loads(
        (one / "checkpoint-4/ftlab_checkpoint.json").read_text()
    )
    loss1 = [ln.split(",") for ln in (one / "training_log.csv").read_text().splitlines()]
    loss2 = [ln.split(",") for ln in (two / "training_log.csv").read_text().splitlines()]
    i = loss1[0].index("loss")
    assert loss1[0] == loss2[0]
    for r1, r2 in zip(loss1[1:], loss2[1:], strict=True):
        if r1[i]:
            assert abs(float(r1[i]) - float(r2[i])) < 1e-4, (r1, r2)
