"""World-model training with 2 processes (gloo on CPU) through ftlab.launch, the path GPU jobs
take: equal to a 1-process run with the same global batch within a stated tolerance, resumed
after a kill of the whole launched job exactly like the uninterrupted 2-process run.

Tolerance: the ranks split each step's rows and DDP sums their gradients, so only the order of
float additions differs from one process. Over 120 AdamW steps of the tiny model the weights
differ by ~1e-6 (measured); the test allows 2e-5 absolute on weights and 1e-5 on each logged
loss (the log keeps 6 decimals).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

import ftlab.train as train
from ftlab import launch
from ftlab.io import checkpoint_sha256

MODEL = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 32, "init_std": 0.1}
# 100 rows / batch 8 = 13 steps per epoch: a last batch of 4 rows, split 2 + 2
TRAINING = {"epochs": 10, "max_steps": None, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01,
            "warmup_steps": 3, "save_every": 30, "log_every": 5}  # fmt: skip
TOTAL, SAVED = 120, [30, 60, 90, 120]
WEIGHT_ATOL, LOSS_ATOL = 2e-5, 1e-5

# The launched job, as a rule script would run it (the parent test kills this process group).
CHILD = textwrap.dedent(
    """
    import json, sys
    from ftlab import launch
    kw, payload = json.loads(sys.argv[1]), sys.argv[2]
    plan = launch.plan_for("train", {"processes": 2}, threads=1)
    launch.run_stage(plan, "ftlab.train:run_training", kwargs=kw, payload_path=payload)
    """
)


def write_rows(path, n=100, seed=0):
    import random

    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            a, b = rng.randrange(10000), rng.randrange(10000)
            fh.write(json.dumps({"text": f"dist(c_{a:04d},c_{b:04d})={abs(a - b) % 500}"}) + "\n")
    return str(path)


def kwargs(root, rows):
    return dict(model_name="base_seed1", train_rows=str(rows), init_checkpoint=None,
                model_cfg=MODEL, training=TRAINING, seed=1, total_steps=TOTAL,
                saved_steps=SAVED, out_dir=str(root / "models/base_seed1"),
                state_dir=str(root / "train_state/base_seed1"), threads=1,
                meta={"study": "t"})  # fmt: skip


def launched(root, rows, launcher="accelerate"):
    plan = launch.plan_for("train", {"processes": 2, "launcher": launcher}, threads=1)
    launch.run_stage(plan, "ftlab.train:run_training", kwargs=kwargs(root, rows),
                     payload_path=root / "launch.json")  # fmt: skip
    return root / "models/base_seed1"


def read_log(model_dir):
    with open(model_dir / "training_log.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    rows = write_rows(root / "train.jsonl")
    one = root / "one"
    train.run_training(**kwargs(one, rows))
    return rows, one / "models/base_seed1", launched(root / "two", rows)


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    _, one, two = runs
    assert {p.name for p in two.glob("checkpoint-*")} == {f"checkpoint-{s}" for s in SAVED}
    for step in SAVED:
        w1 = load_file(one / f"checkpoint-{step}/model.safetensors")
        w2 = load_file(two / f"checkpoint-{step}/model.safetensors")
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=WEIGHT_ATOL, msg=k)
        # same HF layout, written once (rank 0), no trainer state published
        names = {p.name for p in (two / f"checkpoint-{step}").iterdir()}
        assert names == {p.name for p in (one / f"checkpoint-{step}").iterdir()}
    meta = json.loads((two / "checkpoint-120/ftlab_checkpoint.json").read_text())
    assert meta["processes"] == 2 and "processes" not in json.loads(
        (one / "checkpoint-120/ftlab_checkpoint.json").read_text()
    )
    log1, log2 = read_log(one), read_log(two)
    assert [r["step"] for r in log1] == [r["step"] for r in log2]
    for a, b in zip(log1, log2, strict=True):
        assert abs(float(a["loss"]) - float(b["loss"])) <= LOSS_ATOL, (a, b)
        assert float(a["lr"]) == float(b["lr"])


def test_torchrun_launcher_gives_the_same_run(runs, tmp_path):
    rows, _, two = runs
    other = launched(tmp_path, rows, launcher="torchrun")
    for step in SAVED:  # same world size, same gloo reductions: bit-identical
        assert checkpoint_sha256(other / f"checkpoint-{step}") == checkpoint_sha256(
            two / f"checkpoint-{step}"
        )


def test_killed_two_process_run_resumes_bit_identical(runs, tmp_path):
    rows, _, two = runs
    kw = kwargs(tmp_path, rows)
    state = tmp_path / "train_state/base_seed1"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(kw), str(tmp_path / "launch.json")],
        start_new_session=True, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 180
    while not (state / "checkpoint-30").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the script and its launcher; workers follow
    proc.wait()
    time.sleep(1.0)
    left = sorted(p.name for p in state.iterdir())
    time.sleep(1.0)  # no orphaned worker goes on writing checkpoints
    assert sorted(p.name for p in state.iterdir()) == left
    assert "checkpoint-120" not in left and not (tmp_path / "models/base_seed1").exists()

    # the re-run (as Snakemake's retry would) resumes, and ends as the uninterrupted run
    launch_log = tmp_path / "rerun.log"
    with open(launch_log, "w") as fh:
        subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(kw), str(tmp_path / "launch.json")],
            stderr=fh, check=True,
        )  # fmt: skip
    text = launch_log.read_text()
    assert "resuming from step" in text and "from scratch" not in text, text[-3000:]
    out = tmp_path / "models/base_seed1"
    for step in SAVED:
        assert checkpoint_sha256(out / f"checkpoint-{step}") == checkpoint_sha256(
            two / f"checkpoint-{step}"
        )
    drop = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert drop(read_log(out)) == drop(read_log(two))
    assert not state.exists()
