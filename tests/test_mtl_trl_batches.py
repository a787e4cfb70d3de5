"""mtl.trl.batch_composition per_task: seed 000's MTL batches (Reasoning360-MTL 6133d10,
ray_trainer.py: one shuffled drop_last loader per task with batch train_batch_size // T, each
restarting on its own when exhausted; total steps = min over tasks of len(loader) x epochs),
through TRL's samplers, the plan and the config check."""

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from test_mtl_trl_train import TASKS, TRL, row, trainer_for

from ftlab.config import ConfigError, validate_config
from ftlab.mtl import trl_train
from ftlab.mtl.study import MTLStudy
from ftlab.mtl.trl_data import PerTaskSampler

TESTS = Path(__file__).resolve().parent
SIZES = [7, 12, 5]  # uneven tasks, interleaved in the dataset


def task_of_row(sizes):
    left, out = list(sizes), []
    while any(left):
        for t in range(len(sizes)):
            if left[t]:
                out.append(t)
                left[t] -= 1
    return out


def seed_steps_per_epoch(sizes, prompts_per_step):
    """The seed's rule with torch's own DataLoader: min over tasks of len(loader), each loader
    drop_last with batch train_batch_size // T."""
    per_task = prompts_per_step // len(sizes)
    return min(len(torch.utils.data.DataLoader(range(n), batch_size=per_task, drop_last=True))
               for n in sizes)  # fmt: skip


def test_each_chunk_holds_the_per_task_count_and_tasks_restart_on_their_own():
    tasks = task_of_row(SIZES)
    steps = seed_steps_per_epoch(SIZES, 6)
    assert steps == 2  # the 5-row task: 2 batches of 2
    sampler = PerTaskSampler(tasks, 3, per_task=2, steps=steps, seed=1)
    epochs = []
    for e in range(4):
        sampler.set_epoch(e)
        order = list(sampler)
        assert len(order) == len(sampler) == steps * 6
        epochs.append([order[i : i + 6] for i in range(0, len(order), 6)])
    chunks = [c for ep in epochs for c in ep]  # 8 steps
    for c in chunks:
        assert Counter(tasks[i] for i in c) == {0: 2, 1: 2, 2: 2}
    for t, n in enumerate(SIZES):
        per_pass = n // 2  # the task's loader length: then it starts a new permutation
        stream = [[i for i in c if tasks[i] == t] for c in chunks]
        for start in range(0, len(stream) - per_pass + 1, per_pass):
            rows = [i for b in stream[start : start + per_pass] for i in b]
            assert len(set(rows)) == len(rows)  # no row twice within one pass of the task
        if per_pass < len(stream):  # a new pass reshuffles: another order than the first
            assert stream[per_pass : 2 * per_pass] != stream[:per_pass]
    # the 12-row task's pass spans 3 epochs: epoch 1 continues it (disjoint from epoch 0)
    ep0 = {i for c in epochs[0] for i in c if tasks[i] == 1}
    ep1 = {i for c in epochs[1] for i in c if tasks[i] == 1}
    assert not ep0 & ep1


def test_set_epoch_makes_an_epoch_reproducible_for_a_resumed_run():
    tasks = task_of_row(SIZES)
    whole = PerTaskSampler(tasks, 3, per_task=2, steps=2, seed=4)
    seen = []
    for e in range(3):
        whole.set_epoch(e)
        seen.append(list(whole))
    fresh = PerTaskSampler(tasks, 3, per_task=2, steps=2, seed=4)
    fresh.set_epoch(2)
    assert list(fresh) == seen[2]
    other = PerTaskSampler(tasks, 3, per_task=2, steps=2, seed=5)
    assert list(other) != seen[0]


def test_repeats_follow_trls_repeat_sampler():
    """mini_repeat_count copies of each index in a row, each chunk repeat_count times."""
    tasks = task_of_row(SIZES)
    plain = list(PerTaskSampler(tasks, 3, per_task=1, steps=2, seed=0))
    rep = list(PerTaskSampler(tasks, 3, per_task=1, steps=2, seed=0, mini_repeat_count=2,
                              repeat_count=3))  # fmt: skip
    expected = [i for c in (plain[:3], plain[3:]) for _ in range(3) for i in c for _ in range(2)]
    assert rep == expected


def test_a_task_shorter_than_its_share_is_an_error():
    with pytest.raises(ValueError, match=r"tasks \[2\] have fewer training rows \(\[5\]\)"):
        PerTaskSampler(task_of_row(SIZES), 3, per_task=6, steps=1, seed=0)


# -- plan and trainer ----------------------------------------------------------------------
def grpo_cfg(**changes) -> dict:
    raw = yaml.safe_load((TESTS / "config_mtl_grpo_tiny.yaml").read_text())
    raw = copy.deepcopy(raw)
    for key, value in changes.items():
        section, name = key.split("__")
        raw["mtl"][section][name] = value
    return raw


@pytest.mark.parametrize("limits", [(9, 14), (30, 7)])
def test_the_plan_counts_the_seeds_steps_per_epoch(limits):
    """rows per task = limit_train - validation rows; 8 completions / 2 generations = 4
    prompts per step, 2 of each task; the shortest task's loader sets the epoch."""
    raw = grpo_cfg(training__batch_size=8)
    raw["mtl"]["datasets"]["arith"]["limit_train"] = limits[0]
    raw["mtl"]["datasets"]["trivia"]["limit_train"] = limits[1]
    cfg = validate_config(raw)
    sizes = [n - cfg["mtl"]["validation"]["rows_per_task"] for n in limits]
    study = MTLStudy(cfg)
    assert study.steps_per_epoch == seed_steps_per_epoch(sizes, 4)
    assert "(2 of each task, batch_composition per_task)" in study.plan()
    shuffled = copy.deepcopy(raw)
    shuffled["mtl"]["trl"]["batch_composition"] = "shuffled"
    assert MTLStudy(validate_config(shuffled)).steps_per_epoch == -(-sum(sizes) // 4)
    # the trainer's count on the same rows is the plan's
    trl = cfg["mtl"]["trl"]
    got = trl_train.steps_per_epoch("grpo", sizes, cfg["mtl"]["training"], trl, 1)
    assert got == study.steps_per_epoch
    assert trl_train.per_task_rows("grpo", sizes, cfg["mtl"]["training"], trl, 1) == 2


def test_a_step_that_cannot_split_evenly_over_the_tasks_is_a_config_error():
    raw = grpo_cfg(training__batch_size=6)  # 6 completions / 2 = 3 prompts, 2 tasks
    with pytest.raises(ConfigError, match=r"'mtl.training.batch_size' x 'mtl.trl.grad_accum' x "
                       r"'resources.train.gpus' / 'mtl.trl.num_generations' = 3 prompts per "
                       r"step is not a multiple of 2"):  # fmt: skip
        validate_config(raw)
    raw = grpo_cfg(training__batch_size=2)  # 1 prompt per step: none for one of 2 tasks
    with pytest.raises(ConfigError, match="1 prompts per step is not a multiple of 2"):
        validate_config(raw)
    raw["mtl"]["trl"]["batch_composition"] = "shuffled"
    validate_config(raw)  # the option has no such rule


def test_a_task_with_fewer_rows_than_its_share_is_a_config_error():
    raw = grpo_cfg(training__batch_size=16)  # 8 prompts per step: 4 of each task
    raw["mtl"]["datasets"]["trivia"]["limit_train"] = 5  # 3 training rows
    with pytest.raises(ConfigError, match=r"'mtl.datasets.trivia.limit_train' less "
                       r"'mtl.validation.rows_per_task' leaves 3 training rows, fewer than the "
                       r"4 prompts per task"):  # fmt: skip
        validate_config(raw)


def test_the_trainer_refuses_what_the_check_refuses():
    training = {"batch_size": 6}
    trl = {**TRL, "batch_composition": "per_task"}
    with pytest.raises(ValueError, match=r"6 rows per step \(.* 1 processes\) is not a "
                       r"multiple of the 4 tasks"):  # fmt: skip
        trl_train.per_task_rows("sft", [5, 5, 5, 5], training, trl, 1)
    # GRPO counts prompts: 6 x 4 / 8 generations = 3 per step, over 2 tasks
    grpo = {**trl, "grad_accum": 4, "num_generations": 8}
    with pytest.raises(ValueError, match=r"3 prompts per step \(.* / mtl.trl.num_generations\) "
                       r"is not a multiple of the 2 tasks"):  # fmt: skip
        trl_train.per_task_rows("grpo", [9, 9], training, grpo, 1)
    with pytest.raises(ValueError, match=r"3 rows of each task per step, but the tasks have "
                       r"\[9, 2\] training rows"):  # fmt: skip
        trl_train.per_task_rows("sft", [9, 2], training, trl, 1)
    assert trl_train.per_task_rows("sft", [9, 2], training, {**TRL}, 1) is None  # shuffled


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from ftlab.llm.tiny import build_tiny_causal_lm

    out = tmp_path_factory.mktemp("tiny") / "base"
    return build_tiny_causal_lm(out, seed=0, layers=1, hidden=32, heads=2, max_length=512)


def test_grpo_generation_batches_hold_each_tasks_share(base, tmp_path):
    """Through TRL's GRPO dataloader (batch_size 4 completions, 2 generations: 2 prompts per
    step, 1 of each task): each generation batch is 1 prompt of each task x 2 completions in a
    row, an epoch is the shorter task's rows (3), then the next epoch continues."""
    data = [{"prompt": f"Q{i} {t}", "answer": "", "aliases": [], "fmt": "gsm8k", "task": t}
            for t, n in zip(TASKS, (5, 3), strict=True) for i in range(n)]  # fmt: skip
    spe = trl_train.steps_per_epoch("grpo", [5, 3], {"batch_size": 4},
                                    {**TRL, "batch_composition": "per_task"}, 1)  # fmt: skip
    assert spe == seed_steps_per_epoch([5, 3], 2) == 3
    trainer, _ = trainer_for("grpo", "pcgrad", base, data, tmp_path, task_loss="task_mean",
                             per_task=(1, spe))  # fmt: skip
    loader = trainer.get_train_dataloader()
    assert len(loader) == spe  # grad_accum 1: one generation batch per optimizer step
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        for batch in batches:
            prompts = [r["prompt"] for r in batch]
            assert prompts[0] == prompts[1] and prompts[2] == prompts[3]  # num_generations
            assert sorted(r["task"] for r in batch[::2]) == TASKS
        trivia = [r["prompt"] for b in batches for r in b[::2] if r["task"] == "trivia"]
        assert len(set(trivia)) == 3  # the 3-row task once per epoch


def test_sft_steps_hold_each_tasks_share(base, tmp_path):
    """SFT (batch 4, grad_accum 2: 8 rows per step, 4 of each task) through the Trainer's
    dataloader: every 2 consecutive micro-batches (one optimizer step) hold 4 rows of each."""
    data = [{"prompt": f"Q{i}: ", "completion": c * 3, "task_ids": t}
            for t, (c, n) in enumerate((("a", 9), ("z", 13))) for i in range(n)]  # fmt: skip
    trl = {**TRL, "grad_accum": 2, "batch_composition": "per_task"}
    spe = trl_train.steps_per_epoch("sft", [9, 13], {"batch_size": 4}, trl, 1)
    assert spe == seed_steps_per_epoch([9, 13], 8) == 2
    trainer, _ = trainer_for("sft", "pcgrad", base, data, tmp_path, trl=trl, per_task=(4, spe))
    micro = list(trainer.get_train_dataloader())
    assert len(micro) == spe * 2
    for k in range(0, len(micro), 2):
        ids = torch.cat([micro[k]["task_ids"], micro[k + 1]["task_ids"]]).tolist()
        assert sorted(ids) == [0] * 4 + [1] * 4


def test_a_run_records_the_seeds_steps_per_epoch(base, tmp_path, monkeypatch):
    """A whole SFT run with uneven tasks (5 and 3 training rows, 2 of each per step): the
    manifest's steps per epoch is the seed's min over tasks (1), not ceil(8 / 4) = 2; the
    Trainer moves the sampler to each epoch (so the 5-row task's second batch is used)."""
    from test_mtl_trl_train import FORMATS, TRAINING

    from ftlab.io import write_jsonl

    epochs, chunks = [], []
    set_epoch, chunk = PerTaskSampler.set_epoch, PerTaskSampler.chunk
    monkeypatch.setattr(PerTaskSampler, "set_epoch",
                        lambda self, e: epochs.append(e) or set_epoch(self, e))  # fmt: skip
    monkeypatch.setattr(PerTaskSampler, "chunk",
                        lambda self, s: chunks.append(s) or chunk(self, s))  # fmt: skip

    train = [row(i, "arith") for i in range(5)] + [row(i, "trivia") for i in range(3)]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "val.jsonl", [row(20, t) for t in TASKS])
    m = trl_train.run_trl_training(
        objective="sft", model_name="pcgrad_seed3", train_rows=str(tmp_path / "train.jsonl"),
        validation_rows=str(tmp_path / "val.jsonl"), tasks=TASKS, method="pcgrad",
        reduction="sum", base_model=base, trl={**TRL, "batch_composition": "per_task"},
        formats=FORMATS, training={**TRAINING, "epochs": 2},
        validation={"every_epochs": 1, "before_training": False, "metric": "loss",
                    "batch_size": 8, "max_new_tokens": None, "temperature": 0.0, "top_p": 1.0},
        early_stopping={"enabled": False, "min_epochs": 0, "patience": 1, "min_delta": 0.0,
                        "mode": "min"},
        checkpoints={"save_every_epochs": 1, "keep_last": 2}, seed=3,
        out_dir=str(tmp_path / "out"), state_dir=str(tmp_path / "state"),
    )  # fmt: skip
    assert m["steps_per_epoch"] == seed_steps_per_epoch([5, 3], 4) == 1
    assert [c["step"] for c in m["checkpoints"]] == [1, 2]
    assert sorted(set(epochs)) == [0, 1] and sorted(set(chunks)) == [0, 1]


@pytest.mark.parametrize("name", ["train", "validation"])
def test_a_task_named_like_the_mixed_rows_file_is_a_config_error(name):
    """data/mtl/<task>.jsonl would be data/mtl/train.jsonl, the mixed rows' file: the config
    check names the task instead of Snakemake's AmbiguousRuleException."""
    raw = grpo_cfg()
    raw["mtl"]["datasets"][name] = raw["mtl"]["datasets"].pop("arith")
    raw["mtl"]["tasks"] = {d: [name if t == "arith" else t for t in ts]
                           for d, ts in raw["mtl"]["tasks"].items()}  # fmt: skip
    expected = rf"'mtl.tasks' names '{name}', the name of the mixed {name} rows' file"
    with pytest.raises(ConfigError, match=expected + rf" \(data/mtl/{name}.jsonl\): rename"):
        validate_config(raw)
