"""Training curves in the run registry: each run's models/<model>/training_log.csv is indexed
(step, metric, value), summarised by `ftlab show`, printed by `ftlab history` and logged by
`ftlab export --to wandb|mlflow` as train/<column> at its steps (seed 001's tracker keys).

Every expected value is read from the planted CSV with the csv module here, not by the index."""

from __future__ import annotations

import csv
import io
import math
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_registry_audit import _FakeWandb  # the stand-in wandb module

from ftlab.cli import main
from ftlab.registry import index, synthetic, views
from ftlab.registry.store import Registry

# world kinds (ftlab.train): step,epoch,loss,lr,elapsed_s; a NaN loss is part of the curve
WORLD_LOG = """step,epoch,loss,lr,elapsed_s
1,0.0625,3.2104,1e-05,0.41
2,0.125,2.9871,2e-05,0.80
3,0.1875,nan,3e-05,1.22
4,0.25,2.5012,4e-05,1.61
5,0.3125,2.7330,5e-05,2.03
"""

# TRL kinds (ftlab.llm.train._log_csv): step, epoch, then the other keys sorted; eval rows and
# the final summary row leave the training columns blank, and a text cell is not a value
TRL_LOG = """step,epoch,eval_loss,grad_norm,learning_rate,loss,reward,reward_std,\
rewards/correct/mean,train_runtime
10,0.1,,1.52,4.5e-06,0.8123,0.25,0.433,0.25,
20,0.2,,1.31,4e-06,0.7011,0.5,0.5,0.5,
20,0.2,0.7402,,,,,,,
30,0.3,,n/a,3.5e-06,0.6550,0.625,0.484,0.625,
40,0.4,,1.02,3e-06,0.6801,0.75,0.433,0.75,
40,0.4,,,,,,,,123.4
"""


def plant(study: Path, model: str, text: str) -> Path:
    path = study / "models" / model / "training_log.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def from_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{column: [(step, value)]}: every cell float() reads, except step (the reference)."""
    out: dict[str, list] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for col, cell in row.items():
                if col == "step" or cell in ("", None):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                out.setdefault(col, []).append((int(row["step"]), value))
    return out


def same(curves: dict, expected: dict) -> None:
    """Equal curves, NaN equal to NaN, order within a step ignored."""

    def key(d):  # repr: exact, and nan equals nan
        return {m: sorted((s, repr(v)) for s, v in pts) for m, pts in d.items()}

    assert key(curves) == key(expected)


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def study(tmp_path):
    s = tmp_path / "results" / "s"
    plant(s, "world_seed1", WORLD_LOG)
    plant(s, "grpo_seed1", TRL_LOG)
    return s


def test_both_log_shapes_read_back_equal_the_csv(study):
    with Registry(study.parent, ["s"]) as reg:
        world = reg.training(reg.resolve("world_seed1")[0])
        trl = reg.training(reg.resolve("grpo_seed1")[0])
        assert reg.file_errors() == []
    same(world, from_csv(study / "models/world_seed1/training_log.csv"))
    same(trl, from_csv(study / "models/grpo_seed1/training_log.csv"))
    assert set(world) == {"epoch", "loss", "lr", "elapsed_s"}  # every column but step
    assert math.isnan(dict(world["loss"])[3])
    # blanks and the text cell are skipped, not zero: grad_norm has 3 values, eval_loss one
    assert trl["grad_norm"] == [(10, 1.52), (20, 1.31), (40, 1.02)]
    assert trl["eval_loss"] == [(20, 0.7402)] and trl["train_runtime"] == [(40, 123.4)]


def test_incremental_refresh_picks_up_appended_rows(study):
    log = study / "models/world_seed1/training_log.csv"
    index.refresh(study)
    assert index.refresh(study)["updated"] == 0  # nothing changed: nothing re-read
    with open(log, "a") as f:
        f.write("6,0.375,2.2001,6e-05,2.44\n7,0.4375,2.1007,7e-05,2.85\n")
    counts = index.refresh(study)
    assert counts["updated"] == 1 and counts["removed"] == 0  # the log alone
    with Registry(study.parent, ["s"]) as reg:
        curves = reg.training(reg.resolve("world_seed1")[0])
    same(curves, from_csv(log))
    assert curves["loss"][-1] == (7, 2.1007)
    # a log that disappears takes its rows with it
    log.unlink()
    index.refresh(study)
    with Registry(study.parent, ["s"]) as reg:
        assert reg.training(reg.resolve("world_seed1")[0]) == {}


@pytest.mark.parametrize(
    "text, why",
    [
        ("epoch,loss\n0.1,2.0\n", "no 'step' column"),
        ("step,loss\n1,2.0\nten,1.9\n", "line 3: step 'ten' is not a whole number"),
        ("step,loss\n1,2.0\n2,1.9,7\n", "line 3 has 3 cells, the header 2"),
        ("", "empty file"),
    ],
)
def test_malformed_log_warns_and_the_rest_works(study, capsys, text, why):
    bad = plant(study, "bad_seed1", text)
    results = str(study.parent)
    rc, out, err = cli(capsys, "show", "bad_seed1", "--results", results)
    assert rc == 0 and "training log: none indexed" in out
    assert str(bad) in err and why in err and "unreadable" in err
    rc, out, _ = cli(capsys, "stats", "--results", results)
    assert rc == 0 and "unreadable: s/models/bad_seed1/training_log.csv" in out and why in out
    rc, _, err = cli(capsys, "history", "bad_seed1", "--results", results)
    assert rc == 2 and "bad_seed1 has no training log indexed" in err
    rc, out, _ = cli(capsys, "history", "world_seed1", "--metric", "loss", "--results", results)
    assert rc == 0 and out.splitlines()[1] == "1,3.2104"
    # fixing the file clears the error at the next refresh
    bad.write_text("step,loss\n1,2.0\n")
    with Registry(study.parent, ["s"]) as reg:
        assert reg.file_errors() == []
        assert reg.training(reg.resolve("bad_seed1")[0]) == {"loss": [(1, 2.0)]}


def test_show_summarises_the_training(study, capsys):
    trl = from_csv(study / "models/grpo_seed1/training_log.csv")
    with Registry(study.parent, ["s"]) as reg:
        s = views.training_summary(reg, reg.resolve("grpo_seed1")[0])
        w = views.training_summary(reg, reg.resolve("world_seed1")[0])
    steps = sorted({st for pts in trl.values() for st, _ in pts})
    assert (s["steps"], s["first_step"], s["last_step"]) == (len(steps), steps[0], steps[-1])
    loss = sorted(trl["loss"])
    assert s["loss"]["first"] == loss[0] and s["loss"]["last"] == loss[-1]
    assert s["loss"]["min"] == min(loss, key=lambda p: p[1]) and s["loss"]["nan"] == 0
    assert s["learning_rate"] == ("learning_rate", sorted(trl["learning_rate"])[-1])
    assert s["rewards"] == {
        m: sorted(trl[m])[-1] for m in ("reward", "reward_std", "rewards/correct/mean")
    }
    # world: lr is its learning rate column; the NaN loss is counted, not the minimum
    assert w["learning_rate"] == ("lr", (5, 5e-05)) and w["rewards"] == {}
    assert w["loss"]["min"] == (4, 2.5012) and w["loss"]["nan"] == 1
    rc, out, _ = cli(capsys, "show", "grpo_seed1", "--results", str(study.parent))
    assert rc == 0
    assert "training log: 4 steps logged (10..40)" in out
    assert (
        "loss:          first 0.8123 (step 10), last 0.6801 (step 40), min 0.655 (step 30)" in out
    )
    assert "last learning_rate: 3e-06 (step 40)" in out
    assert "last reward: 0.75 (step 40)" in out and "last rewards/correct/mean: 0.75" in out


def test_history_prints_the_curves(study, capsys):
    results = str(study.parent)
    trl = from_csv(study / "models/grpo_seed1/training_log.csv")
    rc, out, _ = cli(capsys, "history", "grpo_seed1", "--metric", "loss", "--metric",
                     "eval_loss", "--results", results)  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["step", "loss", "eval_loss"]
    for metric in ("loss", "eval_loss"):
        got = [(int(r["step"]), float(r[metric])) for r in rows if r[metric] != ""]
        assert got == sorted(trl[metric])
    assert [r["step"] for r in rows] == ["10", "20", "30", "40"]  # one row per step
    # default: every column; nan printed as nan
    rc, out, _ = cli(capsys, "history", "world_seed1", "--results", results)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and list(rows[0]) == ["step", "elapsed_s", "epoch", "loss", "lr"]
    assert rows[2]["loss"] == "nan" and float(rows[4]["lr"]) == 5e-05
    rc, out, _ = cli(capsys, "history", "world_seed1", "--format", "table", "--results", results)
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["step", "elapsed_s", "epoch", "loss", "lr"]
    assert lines[2].split() == ["1", "0.41", "0.0625", "3.21", "1e-05"] and len(lines) == 7
    # errors name what exists
    rc, _, err = cli(capsys, "history", "grpo_seed1", "--metric", "rewrd", "--results", results)
    assert rc == 2 and "no training metric 'rewrd'" in err and "reward_std" in err
    rc, _, err = cli(capsys, "history", "nosuch", "--results", results)
    assert rc == 2 and "no run or group 'nosuch'" in err and "grpo_seed1" in err
    plant(study, "grpo_seed2", TRL_LOG)
    rc, _, err = cli(capsys, "history", "grpo", "--results", results)
    assert rc == 2 and "is a group of 2 runs" in err


def test_a_finished_training_job_indexes_its_log(study):
    (study / "models/world_seed1/provenance.json").write_text('{"stage": "train"}')
    assert index.record_job(study / "models/world_seed1/provenance.json") == 3
    conn = index.connect(index.index_path(study))
    n = conn.execute("SELECT COUNT(*) FROM training WHERE model = 'world_seed1'").fetchone()[0]
    conn.close()
    assert n == sum(map(len, from_csv(study / "models/world_seed1/training_log.csv").values()))


# -- export --to: the stand-in trackers record what they are asked ----------------------------
def fake_mlflow():
    mod = types.ModuleType("mlflow")
    mod.logged, mod.runs = [], []

    @contextmanager
    def start_run(run_name):
        mod.runs.append(run_name)
        yield

    mod.set_tracking_uri = lambda uri: None
    mod.set_experiment = lambda name: None
    mod.start_run = start_run
    mod.log_metrics = lambda values, step: mod.logged.append((mod.runs[-1], step, dict(values)))
    return mod


def expected_train(path: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict] = {}
    for col, pts in from_csv(path).items():
        for step, v in pts:
            out.setdefault(step, {})[f"train/{col}"] = v
    return out


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_export_logs_training_curves_with_their_steps(study, capsys, monkeypatch, backend):
    synthetic.in_domain(study, "grpo_seed1", 40, {"gsm8k": [1, 0, 1, 1]})
    fake = _FakeWandb() if backend == "wandb" else fake_mlflow()
    monkeypatch.setitem(sys.modules, backend, fake)
    rc, out, _ = cli(capsys, "export", "grpo_seed1", "--to", backend, "--results",
                     str(study.parent))  # fmt: skip
    assert rc == 0 and "logged 1 runs" in out
    logged = fake.logged
    steps = [s for _, s, _ in logged]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # W&B needs increasing
    want = expected_train(study / "models/grpo_seed1/training_log.csv")
    got = {s: {k: v for k, v in vals.items() if k.startswith("train/")} for _, s, vals in logged}
    assert got == want
    n_train = sum(map(len, want.values()))
    assert f"{n_train} training values" in out
    # the evaluation metrics are in the same call as the training values of their step
    assert logged[-1][2]["gsm8k/accuracy"] == 0.75 and logged[-1][2]["train/loss"] == 0.6801
    # --no-training: the evaluation results alone
    fake.logged.clear()
    rc, _, _ = cli(capsys, "export", "grpo_seed1", "--to", backend, "--no-training",
                   "--results", str(study.parent))  # fmt: skip
    assert rc == 0 and [s for _, s, _ in fake.logged] == [40]
    assert not any(k.startswith("train/") for k in fake.logged[0][2])


def test_export_of_every_run_includes_runs_without_evaluations(study, capsys, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rc, out, _ = cli(capsys, "export", "--to", "wandb", "--results", str(study.parent))
    assert rc == 0 and "logged 2 runs (0 values" in out
    world = {s: v for name, s, v in fake.logged if name == "world_seed1"}
    exp = expected_train(study / "models/world_seed1/training_log.csv")
    assert world.keys() == exp.keys() and math.isnan(world[3]["train/loss"])
    assert all(world[s]["train/lr"] == exp[s]["train/lr"] for s in exp)


def test_an_index_from_before_training_curves_is_rebuilt(study):
    """Schema 1 had no training table: such an index is a stale cache, read again in full."""
    index.refresh(study)
    conn = index.connect(index.index_path(study))
    conn.execute("DROP TABLE training")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with Registry(study.parent, ["s"]) as reg:
        curves = reg.training(reg.resolve("world_seed1")[0])
    same(curves, from_csv(study / "models/world_seed1/training_log.csv"))


def test_the_writers_logs_are_indexed_as_written(tmp_path):
    """The logs the training code itself writes (world, mtl world, a Trainer's log history
    with a train row, an eval row and the final summary row) read back equal to the CSV."""
    from ftlab.llm.train import _log_csv as trl_csv
    from ftlab.mtl.world_train import _log_csv as mtl_csv
    from ftlab.train_checkpoints import _log_csv as world_csv

    study = tmp_path / "results" / "w"
    plant(study, "world_seed1", world_csv(
        [{"step": s, "epoch": s / 8, "loss": 3.0 / s, "lr": 1e-4 * s, "elapsed_s": 0.3 * s}
         for s in range(1, 5)]))  # fmt: skip
    plant(study, "pcgrad_seed1", mtl_csv(
        [{"step": s, "epoch": s / 4, "loss": 2.0 / s, "loss_angle": 1.2 / s,
          "loss_distance": 0.8 / s, "conflicts": s % 2, "lr": 5e-4, "elapsed_s": s}
         for s in (1, 2)], ["angle", "distance"]))  # fmt: skip
    plant(study, "grpo_seed1", trl_csv([
        {"loss": 0.31, "grad_norm": 2.5, "learning_rate": 1e-6, "reward": 0.5,
         "rewards/correctness_reward/mean": 0.25, "epoch": 0.5, "step": 2},
        {"eval_loss": 0.29, "eval_runtime": 1.5, "epoch": 0.5, "step": 2},
        {"train_runtime": 12.0, "train_loss": 0.3, "epoch": 1.0, "step": 4},
    ]))  # fmt: skip
    with Registry(study.parent, ["w"]) as reg:
        assert reg.file_errors() == []
        for model in ("world_seed1", "pcgrad_seed1", "grpo_seed1"):
            curves = reg.training(reg.resolve(model)[0])
            same(curves, from_csv(study / "models" / model / "training_log.csv"))
        assert reg.training(reg.resolve("pcgrad_seed1")[0])["conflicts"] == [(1, 1.0), (2, 0.0)]
        assert reg.training(reg.resolve("grpo_seed1")[0])["train_loss"] == [(4, 0.3)]
