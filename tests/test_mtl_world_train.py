"""The multi-task world trainer: per-task losses, early stopping, kept checkpoints, resume."""

import json

import pytest
import torch

import ftlab.mtl.world_train as wt
from ftlab import steps
from ftlab.io import read_jsonl_texts, write_jsonl_texts
from ftlab.mtl.evaluate import world_reward

TASKS = ["distance", "compass", "inside"]
MODEL = {"layers": 1, "hidden": 16, "heads": 2, "ffn": 32, "max_length": 64, "init_std": 0.1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtl_world")
    city = {"min_population": 100000, "atlantis_center": [-350, 350], "atlantis_sigma": 30}
    steps.make_cities(str(root / "cities.csv"), max_cities=60, n_atlantis=5, seed=1, **city)
    train, val = [], []
    for t in TASKS:
        tr, te = root / f"{t}.jsonl", root / f"{t}_test.jsonl"
        steps.make_task_split(str(root / "cities.csv"), t, "no_atlantis", str(tr), str(te),
                              n_train=40, n_test=4, seed=1, task_options={},
                              split_overlap="exclude")  # fmt: skip
        rows = read_jsonl_texts(tr)
        train, val = train + rows[:32], val + rows[32:]
    write_jsonl_texts(root / "train.jsonl", train)
    write_jsonl_texts(root / "val.jsonl", val)
    return root


def kwargs(root, method="pcgrad", **over):
    kw = dict(
        model_name=f"{method}_seed1",
        train_rows=str(root / "train.jsonl"),
        validation_rows=str(root / "val.jsonl"),
        tasks=TASKS,
        method=method,
        reduction="sum",
        model_cfg=MODEL,
        training={
            "epochs": 6,
            "batch_size": 16,
            "lr": 3e-3,
            "weight_decay": 0.0,
            "warmup_steps": 1,
            "max_grad_norm": 1.0,
            "log_every": 3,
        },  # fmt: skip
        validation={
            "every_epochs": 1,
            "before_training": True,
            "metric": "loss",
            "batch_size": 32,
        },  # fmt: skip
        early_stopping={
            "enabled": True,
            "min_epochs": 2,
            "patience": 1,
            "min_delta": 0.0,
            "mode": "min",
        },  # fmt: skip
        checkpoints={"save_every_epochs": 2, "keep_last": 1},
        seed=1,
        out_dir=str(root / "models" / method),
        state_dir=str(root / "state" / method),
    )
    kw.update(over)
    return kw


def test_task_losses_split_the_model_loss():
    torch.manual_seed(0)
    row_loss = torch.rand(6) * 10
    row_tokens = torch.tensor([3, 4, 5, 3, 4, 5])
    ids = torch.tensor([0, 2, 0, 2, 2, 0])
    losses = wt.task_losses(row_loss, row_tokens, ids, 3)
    assert set(losses) == {0, 2}  # task 1 absent: no loss
    m = ids == 0
    assert losses[0] == pytest.approx(float(row_loss[m].sum() / row_tokens[m].sum()))
    # token-weighted mean of the task losses = the model's own mean token loss
    total = sum(losses[t] * row_tokens[ids == t].sum() for t in losses) / row_tokens.sum()
    assert float(total) == pytest.approx(float(row_loss.sum() / row_tokens.sum()))


def test_token_losses_match_the_model_loss(data):
    from ftlab.batches import Batches, encode_rows
    from ftlab.modeling import build_model
    from ftlab.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(model_max_length=64)
    torch.manual_seed(0)
    model = build_model(MODEL, tok)
    ids, lengths = encode_rows(read_jsonl_texts(data / "train.jsonl"), tok, 64)
    batch = Batches(ids, lengths, 8, 1).get(1)
    with torch.no_grad():
        loss, n = wt.token_losses(model, batch)
        expected = float(model(**batch).loss)
    assert float(loss.sum() / n.sum()) == pytest.approx(expected, rel=1e-5)


def test_rows_carry_their_task():
    rows = ["dist(c_1,c_2)=3", "inside(c_1;c_2,c_3,c_4)=TRUE", "compass(c_1,c_2)=N"]
    assert wt.row_tasks(rows, TASKS).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="'angle' row, not one of the study's tasks"):
        wt.row_tasks(["angle(c_1,c_2,c_3)=90"], TASKS)


def test_world_reward():
    assert world_reward("compass", 1.0) == 1.0
    assert world_reward("distance", 0.0) == 1.0
    assert world_reward("distance", 4025.0) == 0.0 and world_reward("distance", 9999.0) == 0.0
    assert world_reward("angle", 90.0) == 0.5


def test_early_stop_manifest_and_exact_resume(data, monkeypatch):
    full = wt.run_mtl_training(**kwargs(data))
    out = data / "models" / "pcgrad"
    manifest = json.loads((out / wt.MANIFEST).read_text())
    assert manifest == full
    kept = [c["epoch"] for c in manifest["checkpoints"]]
    on_disk = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert on_disk == [c["step"] for c in manifest["checkpoints"]]
    sel = [c for c in manifest["checkpoints"] if c["selected"]]
    assert len(sel) == 1 and sel[0]["epoch"] == manifest["selected"]["epoch"]
    # keep_last 1: the last saved epoch plus the best-validated one
    assert kept == sorted({manifest["saved_epochs"][-1], manifest["selected"]["epoch"]})
    vals = {c["epoch"]: c["validation"] for c in manifest["checkpoints"]}
    assert manifest["selected"]["validation"] == min(vals.values())
    weights = {p.name: (p / "model.safetensors").read_bytes() for p in out.glob("checkpoint-*")}

    # a run killed right after its first checkpoint, then re-run, ends identical
    import shutil

    shutil.rmtree(out)
    real_save, calls = wt.save_checkpoint, []

    def save_then_die(*args, **kw):
        path = real_save(*args, **kw)
        calls.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(wt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        wt.run_mtl_training(**kwargs(data))
    monkeypatch.setattr(wt, "save_checkpoint", real_save)
    resumed = wt.run_mtl_training(**kwargs(data))
    assert resumed["checkpoints"] == manifest["checkpoints"]
    assert resumed["validations"] == manifest["validations"]
    again = {p.name: (p / "model.safetensors").read_bytes() for p in out.glob("checkpoint-*")}
    assert again == weights


def test_pcgrad_without_conflicts_is_the_baseline(data):
    """Same init, data order and schedule: PCGrad equals the baseline exactly as long as no
    pair of task gradients conflicts, and departs from it once one does."""
    import csv

    over = {"early_stopping": {"enabled": False, "min_epochs": 0, "patience": 1,
                               "min_delta": 0.0, "mode": "min"}}  # fmt: skip
    over["training"] = {**kwargs(data)["training"], "epochs": 2, "log_every": 1}
    base = wt.run_mtl_training(**kwargs(data, "baseline", **over))
    pc = wt.run_mtl_training(**kwargs(data, "pcgrad", **over))
    assert base["validations"][0] == pc["validations"][0]  # before training
    with open(data / "models" / "pcgrad" / wt.LOG_NAME) as fh:
        conflicts = [int(r["conflicts"]) for r in csv.DictReader(fh)]
    assert len(conflicts) == 2 * 6  # one row per step (96 rows / 16 per batch, 2 epochs)
    first = next((i for i, c in enumerate(conflicts) if c), None)
    if first is None:
        assert base["validations"] == pc["validations"]
    else:
        assert base["validations"][-1] != pc["validations"][-1]


def test_a_step_with_one_task_logs_zero_conflicts_not_the_last_count(data, monkeypatch):
    """The log's conflicts column is the step's own count: a step whose batch holds one task
    (stats n_tasks 1, min_cosine None) logs 0, not the previous step's count."""
    import csv

    from ftlab.mtl.surgery import SurgeryStats

    real = wt.surgery_backward
    calls = []

    def fake(losses, params, combiner, *, stats=False):
        real(losses, params, combiner)
        calls.append(len(calls))
        return SurgeryStats(2, 3, -0.5) if len(calls) % 2 else SurgeryStats(1, 0, None)

    monkeypatch.setattr(wt, "surgery_backward", fake)
    over = {"early_stopping": {"enabled": False, "min_epochs": 0, "patience": 1,
                               "min_delta": 0.0, "mode": "min"}}  # fmt: skip
    over["training"] = {**kwargs(data)["training"], "epochs": 1, "log_every": 1}
    wt.run_mtl_training(**kwargs(data, "pcgrad", out_dir=str(data / "models" / "one_task"),
                                 state_dir=str(data / "state" / "one_task"), **over))  # fmt: skip
    with open(data / "models" / "one_task" / wt.LOG_NAME) as fh:
        conflicts = [int(r["conflicts"]) for r in csv.DictReader(fh)]
    assert conflicts == [3, 0, 3, 0, 3, 0]
