"""Training: published layout, exact resume after SIGKILL, stale state discarded."""

import csv
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

import ftlab.train as train
from ftlab.io import checkpoint_sha256

MODEL = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 32, "init_std": 0.1}
TRAINING = {
    "epochs": 4,
    "max_steps": None,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "warmup_steps": 3,
    "save_every": 10,
    "log_every": 5,
}
TOTAL, SAVED = 40, [10, 20, 30, 40]  # 100 rows / batch 8 = 13 steps per epoch: crosses epochs


def write_rows(path, n=100, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            a, b = rng.randrange(10000), rng.randrange(10000)
            fh.write(json.dumps({"text": f"dist(c_{a:04d},c_{b:04d})={abs(a - b) % 500}"}) + "\n")
    return str(path)


def kwargs(root, rows, **over):
    kw = dict(
        model_name="base_seed1",
        train_rows=str(rows),
        init_checkpoint=None,
        model_cfg=MODEL,
        training=TRAINING,
        seed=1,
        total_steps=TOTAL,
        saved_steps=SAVED,
        out_dir=str(root / "models" / "base_seed1"),
        state_dir=str(root / "train_state" / "base_seed1"),
        threads=1,
    )
    kw.update(over)
    return kw


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def read_log(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: (root, rows path, model dir)."""
    root = tmp_path_factory.mktemp("reference")
    rows = write_rows(root / "train.jsonl")
    train.run_training(**kwargs(root, rows), meta={"study": "t"})
    return root, rows, root / "models" / "base_seed1"


def test_published_layout(reference):
    root, _, out = reference
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-10", "checkpoint-20", "checkpoint-30", "checkpoint-40", "training_log.csv",
    ]  # fmt: skip
    assert not (root / "train_state" / "base_seed1").exists()
    assert not any(p.name.startswith(".") for p in (root / "models").iterdir())
    for step in SAVED:
        ckpt = out / f"checkpoint-{step}"
        assert not (ckpt / "trainer_state.pt").exists()
        info = json.loads((ckpt / "ftlab_checkpoint.json").read_text())
        assert (info["step"], info["total_steps"], info["seed"]) == (step, TOTAL, 1)
        assert info["model"] == MODEL and info["training"] == TRAINING
        assert info["meta"] == {"study": "t"} and len(info["fingerprint"]) == 64
        assert info["train_data_sha256"] and info["torch_version"] and info["created_at"]
    ckpt = out / "checkpoint-40"
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert model.config.num_hidden_layers == 2 and len(tok) == 98
    log = read_log(out / "training_log.csv")
    assert list(log[0]) == ["step", "epoch", "loss", "lr", "elapsed_s"]
    assert [int(r["step"]) for r in log] == list(range(5, 41, 5))
    assert float(log[-1]["loss"]) < float(log[0]["loss"])  # it learns something
    assert float(log[0]["lr"]) == pytest.approx(1e-3 * 36 / 37)  # step 5: decaying after 3


def test_schedule_and_data_order():
    mult = [train.lr_multiplier(i, warmup=3, total=10) for i in range(10)]
    assert mult[:3] == pytest.approx([0.0, 1 / 3, 2 / 3])  # HF: the first step has lr 0
    assert mult[3] == 1.0 and mult[-1] == pytest.approx(1 / 7)
    # The oracle: HF's get_linear_schedule_with_warmup (the paper's HF Trainer schedule).
    for warmup, total in [(0, 5), (1, 1), (1, 4), (3, 10), (50, 60), (7, 7), (10, 8)]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        hf = get_linear_schedule_with_warmup(opt, warmup, total)
        for i in range(total + 2):
            assert train.lr_multiplier(i, warmup, total) == opt.param_groups[0]["lr"], (warmup, i)
            opt.step()
            hf.step()
    assert all(a > b for a, b in zip(mult[3:], mult[4:], strict=False))  # then strictly decreasing
    ids = torch.arange(20)[:, None].repeat(1, 3)
    b = train.Batches(ids, torch.full((20,), 3), batch_size=8, seed=5)
    assert b.steps_per_epoch == 3
    for epoch in range(2):
        seen = torch.cat([b.get(epoch * 3 + s)["input_ids"][:, 0] for s in (1, 2, 3)])
        assert sorted(seen.tolist()) == list(range(20))  # each row once per epoch
    assert not np.array_equal(train.epoch_permutation(5, 0, 20), train.epoch_permutation(5, 1, 20))


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import ftlab.train as train
    real = train.train_step
    def slow(*a, **k):  # slow the run down so the parent can kill it mid-training
        out = real(*a, **k)
        time.sleep(0.05)
        return out
    train.train_step = slow
    train.run_training(**json.loads(sys.argv[1]))
    """
)


def test_resume_after_sigkill_is_bit_identical(reference, tmp_path, caplog):
    ref_root, rows, ref_out = reference
    kw = kwargs(tmp_path, rows)
    state = tmp_path / "train_state" / "base_seed1"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kw)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (state / "checkpoint-10").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    time.sleep(0.1)  # a couple of steps past the checkpoint: their work is lost
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "models" / "base_seed1").exists()
    assert not (state / "checkpoint-40").exists()
    # A checkpoint that was being written when the kill came must be ignored.
    (state / ".tmp-checkpoint-99").mkdir()
    (state / ".tmp-checkpoint-99" / "model.safetensors").write_bytes(b"partial")

    with caplog.at_level(logging.INFO, logger="ftlab.train"):
        train.run_training(**kw)
    messages = [r.getMessage() for r in caplog.records if r.name == "ftlab.train"]
    resumed = [m for m in messages if m.startswith("resuming from step")]
    assert resumed and int(resumed[0].split()[3]) >= 10, messages
    assert not any("from scratch" in m for m in messages)

    out = tmp_path / "models" / "base_seed1"
    for step in SAVED:
        assert_same_weights(out / f"checkpoint-{step}", ref_out / f"checkpoint-{step}")
        assert checkpoint_sha256(out / f"checkpoint-{step}") == checkpoint_sha256(
            ref_out / f"checkpoint-{step}"
        )
        assert not (out / f"checkpoint-{step}" / "trainer_state.pt").exists()
    assert not state.exists()
    drop = ("elapsed_s",)
    log, ref_log = read_log(out / "training_log.csv"), read_log(ref_out / "training_log.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(log) == strip(ref_log)


def test_fingerprint_mismatch_discards_stale_state(reference, tmp_path, monkeypatch, caplog):
    _, rows, _ = reference
    short = dict(total_steps=10, saved_steps=[5, 10])
    state = tmp_path / "train_state" / "base_seed1"

    def crash(*a, **k):
        raise RuntimeError("killed before publishing")

    monkeypatch.setattr(train, "publish", crash)
    with pytest.raises(RuntimeError):
        train.run_training(**kwargs(tmp_path, rows, **short))
    assert sorted(p.name for p in state.iterdir()) == ["checkpoint-10", "checkpoint-5"]
    monkeypatch.undo()

    # Another seed: the stale checkpoints belong to a different run and are thrown away.
    with caplog.at_level(logging.INFO, logger="ftlab.train"):
        train.run_training(**kwargs(tmp_path, rows, seed=2, **short))
    messages = [r.getMessage() for r in caplog.records if r.name == "ftlab.train"]
    assert any("fingerprint mismatch" in m for m in messages), messages
    assert any("from scratch" in m for m in messages)
    assert not any(m.startswith("resuming") for m in messages)
    info = json.loads(
        (tmp_path / "models/base_seed1/checkpoint-10/ftlab_checkpoint.json").read_text()
    )
    assert info["seed"] == 2 and not state.exists()
    seed2 = weights(tmp_path / "models/base_seed1/checkpoint-10")

    # Same run crashed after its last checkpoint: the re-run resumes at the end and publishes.
    caplog.clear()
    monkeypatch.setattr(train, "publish", crash)
    with pytest.raises(RuntimeError):
        train.run_training(**kwargs(tmp_path, rows, seed=2, **short))
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="ftlab.train"):
        train.run_training(**kwargs(tmp_path, rows, seed=2, **short))
    assert any(r.getMessage().startswith("resuming from step 10") for r in caplog.records)
    again = weights(tmp_path / "models/base_seed1/checkpoint-10")
    assert all(torch.equal(seed2[k], again[k]) for k in seed2) and not state.exists()


def test_finetune_from_checkpoint(reference, tmp_path):
    _, rows, ref_out = reference
    init = ref_out / "checkpoint-40"
    ft = {**TRAINING, "lr": 3e-4, "warmup_steps": 1}
    train.run_training(
        **kwargs(
            tmp_path, rows, model_name="ftwb1-1_seed1", init_checkpoint=str(init),
            training=ft, total_steps=4, saved_steps=[2, 4],
            out_dir=str(tmp_path / "models/ftwb1-1_seed1"),
            state_dir=str(tmp_path / "train_state/ftwb1-1_seed1"),
            log_path=str(tmp_path / "logs" / "ft.csv"),
        )
    )  # fmt: skip
    out = tmp_path / "models/ftwb1-1_seed1"
    info = json.loads((out / "checkpoint-4/ftlab_checkpoint.json").read_text())
    assert info["init_checkpoint"] == str(init)
    assert info["init_checkpoint_sha256"] == checkpoint_sha256(init)
    w0, w4 = weights(init), weights(out / "checkpoint-4")
    assert any(not torch.equal(w0[k], w4[k]) for k in w0)  # it moved...
    assert max((w0[k] - w4[k]).abs().max().item() for k in w0) < 0.01  # ...a little (lr 3e-4)
    assert (tmp_path / "logs" / "ft.csv").read_text() == (out / "training_log.csv").read_text()
