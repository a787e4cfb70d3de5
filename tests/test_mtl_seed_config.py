"""Seed 000's values in config/experiments/mtl_guru_qwen2.5_7b.yaml, as the runs receive them
(Reasoning360-MTL at the seed text's commit 6133d10: scripts/train/example_multinode_mtl_
qwen2_7b.sh, verl/trainer/config/ppo_trainer.yaml, verl/utils/mtl_utils/pcgrad.py)."""

from pathlib import Path

import pytest

from ftlab.config import load_config
from ftlab.mtl import settings, trl_train
from ftlab.mtl.study import MTLStudy, rows_per_step
from ftlab.mtl.surgery import Baseline, PCGrad, make_combiner

CONFIG = Path(__file__).resolve().parents[1] / "config/experiments/mtl_guru_qwen2.5_7b.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def runs(cfg):
    return {r: settings.training(cfg, r) for r in MTLStudy(cfg).runs}


def test_pcgrad_takes_the_mean_and_the_baseline_the_plain_loss(runs):
    """pcgrad.py: PCGrad(actor_optimizer) -> reduction 'mean'; the baseline (MTL_ENABLED=false)
    trains verl's plain policy loss, one backward of the summed per-task losses here."""
    assert {r: s["method"] for r, s in runs.items()} == {"baseline_seed1": "baseline",
                                                         "pcgrad_seed1": "pcgrad"}  # fmt: skip
    assert runs["pcgrad_seed1"]["reduction"] == "mean"
    assert runs["baseline_seed1"]["reduction"] == "sum"
    combiners = {r: make_combiner(s["method"], seed=s["seed"], reduction=s["reduction"])
                 for r, s in runs.items()}  # fmt: skip
    assert isinstance(combiners["pcgrad_seed1"], PCGrad)
    assert combiners["pcgrad_seed1"].reduction == "mean"
    assert isinstance(combiners["baseline_seed1"], Baseline)
    assert combiners["baseline_seed1"].reduction == "sum"


def test_pcgrad_takes_each_tasks_token_mean_and_the_baseline_the_batch_loss(runs):
    """fsdp_workers.py update_actor: one compute_policy_loss per task batch (dp_actor.py:
    loss_agg_mode token-mean over that task's rows), then pc_backward; the baseline runs with MTL
    disabled: update_policy's token-mean over the batch (the per-task losses' batch shares)."""
    assert runs["pcgrad_seed1"]["trl"]["task_loss"] == "task_mean"
    assert runs["baseline_seed1"]["trl"]["task_loss"] == "batch_share"
    assert all("baseline_task_loss" not in s["trl"] for s in runs.values())  # resolved per run


def test_every_step_draws_from_every_task_and_an_epoch_is_the_shortest_tasks_pass(cfg, runs):
    """ray_trainer.py _create_dataloader (MTL): one drop_last loader per task with batch
    train_batch_size // T, total_training_steps = min over tasks of len(loader) x epochs."""
    assert {s["trl"]["batch_composition"] for s in runs.values()} == {"per_task"}
    mtl = cfg["mtl"]
    tasks = [t for ts in mtl["tasks"].values() for t in ts]
    per_task = rows_per_step(mtl, cfg["resources"]["train"]["gpus"]) // len(tasks)
    rows = [mtl["datasets"][t]["limit_train"] - mtl["validation"]["rows_per_task"] for t in tasks]
    assert (per_task, rows) == (12, [1936] * 5)
    assert MTLStudy(cfg).steps_per_epoch == min(n // per_task for n in rows) == 161


def test_optimizer_schedule_and_rollouts_are_the_seeds(cfg, runs):
    for s in runs.values():
        t, trl = s["training"], s["trl"]
        assert (t["lr"], t["warmup_steps"], t["weight_decay"], t["max_grad_norm"]) == (
            1e-6, 10, 0.1, 1.0)  # fmt: skip
        assert trl["lr_scheduler"] == "constant"  # warmup_style constant
        assert (trl["num_generations"], trl["temperature"], trl["beta"]) == (16, 1.0, 0.0)
        assert (trl["max_prompt_length"], trl["max_completion_length"]) == (4096, 8192)
        # 60 prompts per optimizer update on 2 processes (ppo_mini_batch_size 64, less its
        # remainder over the 5 tasks: per_task batches take 12 of each)
        assert rows_per_step(cfg["mtl"], cfg["resources"]["train"]["gpus"]) == 60
        assert t["epochs"] == 30


def test_the_trainer_gets_the_seeds_optimizer_settings(runs, tmp_path):
    """What TRL's trainer is built with: constant rate after 10 warmup steps (verl's
    get_constant_schedule_with_warmup), AdamW weight decay 0.1, clipping at 1.0."""
    s = runs["pcgrad_seed1"]
    recipe = trl_train.make_recipe("grpo", s["training"], s["trl"], max_steps=100)
    args = trl_train.trl_args(recipe, "grpo", s["training"], str(tmp_path), seed=1)
    import torch
    import transformers

    assert args.lr_scheduler_type == "constant_with_warmup"
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    sched = transformers.get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=10,
                                       num_training_steps=100)  # fmt: skip
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[5] == pytest.approx(0.5e-6) and lrs[10:] == pytest.approx([1e-6] * 90)
    assert (args.learning_rate, args.warmup_steps, args.weight_decay, args.max_grad_norm) == (
        1e-6, 10, 0.1, 1.0)  # fmt: skip
    assert (args.num_generations, args.temperature, args.max_completion_length) == (16, 1.0, 8192)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 2 == 60 * 16


def test_validation_samples_as_the_seeds_val_kwargs(runs):
    """val_kwargs: do_sample True, temperature 1.0, top_p 1.0, n 1; every 3 epochs and before
    training; early stopping min 10 epochs, patience 3, min delta 0.001, mode max."""
    for s in runs.values():
        v, es = s["validation"], s["early_stopping"]
        assert (v["temperature"], v["top_p"], v["metric"]) == (1.0, 1.0, "score")
        assert (v["every_epochs"], v["before_training"]) == (3, True)
        assert (es["min_epochs"], es["patience"], es["min_delta"], es["mode"]) == (
            10, 3, 0.001, "max")  # fmt: skip
        assert (s["checkpoints"]["save_every_epochs"], s["checkpoints"]["keep_last"]) == (5, 10)


def test_the_validator_passes_the_sampling_settings_to_the_generator(monkeypatch):
    from ftlab.llm import generate
    from ftlab.mtl import trl_validate

    seen = {}

    def samples(self, prompts, n, *, max_new_tokens, batch_size, temperature, top_p=None):
        seen.update(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        return [["#### 3"] for _ in prompts]

    monkeypatch.setattr(generate.HFGenerator, "samples", samples)
    monkeypatch.setattr(generate.HFGenerator, "of", classmethod(lambda cls, m, t: cls.__new__(cls)))
    rows = [{"id": "a0", "question": "1+2?", "answer": "3", "aliases": [], "task": "arith",
             "solution": "#### 3"}]  # fmt: skip
    value = trl_validate.validation_score(None, None, rows, ["arith"], {"arith": "gsm8k"},
                                          max_new_tokens=7, batch_size=2, temperature=1.0,
                                          top_p=1.0)  # fmt: skip
    assert seen == {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 7}
    assert value == 1.0


# scripts/train/example_multinode_eval_guru7b_mtl.sh at 6133d10 (the seed's evaluation engine):
# leaderboard_list in order, each with its domain_mappings entry.
ENGINE_LEADERBOARD = [
    ("aime", "math"), ("math", "math"), ("humaneval", "codegen"), ("mbpp", "codegen"),
    ("livecodebench", "codegen"), ("gpqa_diamond", "stem"), ("supergpqa", "stem"),
    ("arcagi", "logic"), ("zebra_puzzle", "logic"), ("codeio", "simulation"),
    ("cruxeval-i", "simulation"), ("cruxeval-o", "simulation"), ("finqa", "table"),
    ("hitab", "table"), ("multihier", "table"), ("livebench_reasoning", "ood"),
    ("livebench_language", "ood"), ("livebench_data_analysis", "ood"), ("ifeval", "ood"),
]  # fmt: skip


def test_the_eval_suite_is_the_engines_leaderboard(cfg):
    """Every engine task, in its domain and order, as guru_<leaderboard> ('-' -> '_'); nothing
    else (the seed text's AMC / ordering puzzles are not in the engine's code)."""
    assert len(ENGINE_LEADERBOARD) == 19
    expected: dict[str, list[str]] = {}
    for board, domain in ENGINE_LEADERBOARD:
        expected.setdefault(domain, []).append("guru_" + board.replace("-", "_"))
    suite = cfg["mtl"]["eval"]["suite"]
    assert suite == expected
    assert list(suite) == ["math", "codegen", "stem", "logic", "simulation", "table", "ood"]
    assert suite["ood"] == ["guru_livebench_reasoning", "guru_livebench_language",
                            "guru_livebench_data_analysis", "guru_ifeval"]  # fmt: skip
    # seed 000's engine scores them (ftlab.mtl.guru_eval); no lm-eval metrics
    assert cfg["mtl"]["eval"]["engine"] == "guru"
    assert cfg["mtl"]["eval"]["metrics"] == {}
    assert MTLStudy(cfg).suite == {t: d for d, ts in expected.items() for t in ts}


def test_an_sft_run_has_no_task_loss_in_its_params():
    """task_loss is GRPO's: an SFT study's run settings (the job's params) leave it out, so
    editing it re-runs no SFT training; SFT runs still train (trl_train reads it as optional)."""
    sft = load_config(Path(__file__).resolve().parent / "config_mtl_sft_tiny.yaml")
    for run in MTLStudy(sft).runs:
        trl = settings.training(sft, run)["trl"]
        assert "task_loss" not in trl and "baseline_task_loss" not in trl
        assert "batch_composition" in trl  # SFT's too
