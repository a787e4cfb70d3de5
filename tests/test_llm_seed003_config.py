"""Seed 003's hyperparameters as config/experiments/forgetting_qwen3_1.7b.yaml declares them
(GitHub Emilianopp/forgetting-llms @ 9187362: scripts/run_sft.sh, run_grpo_sequential.sh,
generate_trajectories.sh, src/data/generate_teacher_solutions.py, scripts/preprocess_data.py),
pinned so they cannot drift; and the settings that carry them to the trainers."""

import math
import re
from pathlib import Path

import pytest
import yaml

from ftlab.config import ConfigError, validate_config
from ftlab.llm import teacher
from ftlab.llm.recipes import GRPORecipe, SFTRecipe, recipe_for
from ftlab.llm.study import LLMStudy

REPO = Path(__file__).resolve().parents[1]
SEED003 = REPO / "config/experiments/forgetting_qwen3_1.7b.yaml"


@pytest.fixture(scope="module")
def cfg():
    return validate_config(yaml.safe_load(SEED003.read_text()))


def test_seed003_data_selection(cfg):
    d = cfg["llm"]["datasets"]
    assert d["math"]["boxed"] == "one_level"  # preprocess_data.py extract_math_answer
    assert d["math"]["rows"]["train"] == 7397
    assert d["triviaqa"]["shuffle_seed_train"] == 42 and d["triviaqa"]["limit_train"] == 7500
    assert d["gsm8k"]["rows"]["train"] == 7473


def test_seed003_sft(cfg):
    """run_sft.sh: lr 1e-5, 3 epochs, train_batch_size 16, cosine, warmup ratio 0.05,
    weight decay 0.01, save_freq 100, max_length 2048 / 3072 / 512."""
    study = LLMStudy(cfg)
    sft = cfg["llm"]["sft"]
    assert (sft["lr"], sft["epochs"], sft["save_steps"]) == (1e-5, 3, 100)
    assert sft["batch_size"] * sft["grad_accum"] * cfg["resources"]["train"]["gpus"] == 16
    assert (sft["lr_scheduler_type"], sft["warmup_steps"], sft["warmup_rounding"]) == (
        "cosine",
        0.05,
        "floor",
    )
    assert sft["weight_decay"] == 0.01
    lengths = {"gsm8k": 2048, "math": 3072, "triviaqa": 512}
    steps = {"gsm8k": 1401, "math": 1386, "triviaqa": 1404}
    for method in ("gt_sft", "teacher_sft"):
        for dataset, max_length in lengths.items():
            recipe = recipe_for("sft", study.recipe(f"{method}-{dataset}_seed1"))
            assert recipe.max_length == max_length, (method, dataset)
            # VeRL's fsdp_sft_trainer: int(total_steps * warmup ratio)
            assert recipe.warmup() == int(recipe.max_steps * 0.05)
    for dataset, n in steps.items():
        assert study.run(f"gt_sft-{dataset}_seed1").total_steps == n


def test_seed003_grpo(cfg):
    """run_grpo_sequential.sh: train_batch_size 16 prompts = ppo_mini_batch_size (one update a
    step), rollout.n 4, lr 1e-6 constant, no KL, prompts 512 / responses 1024 (TriviaQA
    256 / 256), save_freq 200; the reward pays correctness only."""
    study = LLMStudy(cfg)
    g = cfg["llm"]["grpo"]
    gpus = cfg["resources"]["train"]["gpus"]
    assert g["num_generations"] == 4
    assert g["batch_size"] * g["grad_accum"] * gpus // g["num_generations"] == 16
    assert (g["lr"], g["lr_scheduler_type"], g["warmup_steps"]) == (1e-6, "constant", 0)
    assert (g["beta"], g["temperature"], g["format_weight"], g["weight_decay"]) == (
        0.0,
        1.0,
        0.0,
        0.01,
    )
    expect = {"gsm8k": (1200, 512, 1024), "math": (800, 512, 1024), "triviaqa": (1000, 256, 256)}
    for dataset, (steps, prompt, completion) in expect.items():
        recipe = recipe_for("grpo", study.recipe(f"grpo-{dataset}_seed1"))
        assert (recipe.max_steps, recipe.save_steps) == (steps, 200)
        assert (recipe.max_prompt_length, recipe.max_completion_length) == (prompt, completion)


def test_seed003_teacher(cfg):
    """generate_teacher_solutions.py via generate_trajectories.sh: Qwen3-32B, n_samples 4,
    temperature 0.7, top_p 0.9, max_tokens 2048, tensor parallel 2, the first correct kept."""
    t = cfg["llm"]["teacher"]
    assert t["model"] == "Qwen/Qwen3-32B"
    assert (t["samples_per_question"], t["temperature"], t["top_p"]) == (4, 0.7, 0.9)
    assert (t["max_new_tokens"], t["keep"]) == (2048, "first")
    assert cfg["resources"]["teacher"]["gpus"] == 2 and t["tensor_parallel_size"] is None


def _recipe(cls, **over):
    base = validate_config({"kind": "llm", "study": "t", "llm": {"datasets": {
        "g": {"format": "gsm8k", "train": "a", "test": "b"}}}})["llm"][cls.section]  # fmt: skip
    return cls.from_config({**base, **over})


@pytest.mark.parametrize("max_steps", [1, 7, 588, 1230, 1386, 1401, 1404])
def test_warmup_rounding_matches_transformers_and_verl(max_steps, tmp_path):
    from transformers import TrainingArguments

    hf = TrainingArguments(output_dir=str(tmp_path), warmup_steps=0.05)
    ceil = _recipe(SFTRecipe, max_steps=max_steps, warmup_steps=0.05)
    assert ceil.warmup() == hf.get_warmup_steps(max_steps)  # the default: transformers' rule
    floor = _recipe(SFTRecipe, max_steps=max_steps, warmup_steps=0.05, warmup_rounding="floor")
    assert floor.warmup() == int(0.05 * max_steps)  # VeRL: int(ratio * total steps)
    assert _recipe(SFTRecipe, warmup_steps=12, warmup_rounding="floor").warmup() == 12
    trl = floor.trl_config(str(tmp_path / "s"), 0)
    assert trl.get_warmup_steps(max_steps) == int(0.05 * max_steps)


def test_cosine_schedule_after_floor_warmup_is_verls(tmp_path):
    """The learning rates the trainer's scheduler gives equal VeRL's
    get_cosine_schedule_with_warmup (min_lr_ratio 0, num_cycles 0.5), written out here."""
    import torch
    from transformers import get_scheduler

    recipe = _recipe(SFTRecipe, max_steps=101, warmup_steps=0.05, warmup_rounding="floor",
                     lr_scheduler_type="cosine", lr=1.0)  # fmt: skip
    args = recipe.trl_config(str(tmp_path), 0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(args.lr_scheduler_type, opt, args.get_warmup_steps(101), 101)
    warm = int(101 * 0.05)

    def verl(step):
        if step < warm:
            return step / max(1, warm)
        progress = (step - warm) / max(1, 101 - warm)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    for step in range(101):
        assert opt.param_groups[0]["lr"] == pytest.approx(verl(step), abs=1e-12), step
        opt.step()
        sched.step()


def test_run_length_keys_belong_to_their_trainer():
    base = {"kind": "llm", "study": "t", "llm": {
        "datasets": {"g": {"format": "gsm8k", "train": "a", "test": "b"}}}}  # fmt: skip
    ok = validate_config({**base, "llm": {**base["llm"], "runs": {
        "grpo-g": {"max_completion_length": 64}, "gt_sft-g": {"max_length": 99}}}})  # fmt: skip
    study = LLMStudy(ok)
    assert recipe_for("grpo", study.recipe("grpo-g_seed1")).max_completion_length == 64
    assert recipe_for("sft", study.recipe("gt_sft-g_seed1")).max_length == 99
    assert recipe_for("sft", study.recipe("teacher_sft-g_seed1")).max_length == 1024  # section
    for run, key in (("grpo-g", "max_length"), ("gt_sft-g", "max_prompt_length")):
        bad = {**base, "llm": {**base["llm"], "runs": {run: {key: 64}}}}
        with pytest.raises(ConfigError, match=re.escape(f"'llm.runs.{run}.{key}': not a setting")):
            validate_config(bad)


def test_grpo_weight_decay_reaches_trl(tmp_path):
    recipe = _recipe(GRPORecipe, weight_decay=0.01, lr_scheduler_type="constant")
    trl = recipe.trl_config(str(tmp_path), 0, vllm=False)
    assert trl.weight_decay == 0.01 and trl.lr_scheduler_type.value == "constant"


ROWS = [{"id": str(i), "question": f"{i}+1?", "answer": str(i + 1), "aliases": []}
        for i in range(3)]  # fmt: skip


def _right(row, tag="r"):
    return f"<reasoning>{tag}</reasoning><answer>{row['answer']}</answer>"


def test_teacher_keep_first_correct_sample():
    gens = [
        ["<reasoning>r</reasoning><answer>0</answer>", _right(ROWS[0], "a"), _right(ROWS[0], "b")],
        ["<answer>2</answer>", "x"],  # no correct sample: no record
        [_right(ROWS[2], "c"), _right(ROWS[2], "d")],
    ]
    first, counts = teacher.verify_and_keep(ROWS, gens, "gsm8k", keep="first")
    assert [r["completion"] for r in first] == [_right(ROWS[0], "a"), _right(ROWS[2], "c")]
    assert counts["n_kept"] == counts["n_questions_solved"] == 2 and counts["n_generated"] == 7
    every, counts = teacher.verify_and_keep(ROWS, gens, "gsm8k")  # the default: all
    assert len(every) == counts["n_kept"] == 4
    with pytest.raises(ValueError, match="unknown keep rule 'best'"):
        teacher.verify_and_keep(ROWS, gens, "gsm8k", keep="best")


def test_teacher_top_p_reaches_the_generator_and_the_report(tmp_path, monkeypatch):
    rows_path = tmp_path / "rows.jsonl"
    teacher.write_jsonl(rows_path, ROWS)
    built = []

    def fake_hf(model, **kwargs):
        built.append(kwargs)
        return lambda prompts, n: [[_right(r)] * n for r in ROWS[: len(prompts)]]

    monkeypatch.setattr(teacher, "hf_generator", fake_hf)
    monkeypatch.setattr("ftlab.llm.fingerprint.model_fingerprint", lambda m: "x")
    report = teacher.generate_trajectories(
        teacher_model="m", rows_path=str(rows_path), fmt="gsm8k",
        out_path=str(tmp_path / "kept.jsonl"), report_path=str(tmp_path / "r.json"),
        backend="hf", max_new_tokens=8, batch_size=2, samples_per_question=4,
        temperature=0.7, top_p=0.9, keep="first",
    )  # fmt: skip
    assert built[0]["top_p"] == 0.9 and built[0]["temperature"] == 0.7
    assert report["top_p"] == 0.9 and report["keep"] == "first"
    assert report["n_generated"] == 12 and report["n_kept"] == 3


def test_hf_generator_top_p_overrides_the_checkpoints(tmp_path):
    from ftlab.llm import tiny
    from ftlab.llm.generate import HFGenerator

    model = tiny.build_tiny_causal_lm(tmp_path / "m", seed=0, layers=1, hidden=16, heads=2)
    gen = HFGenerator(model)
    gen.model.generation_config.top_p = 0.5
    assert gen._config(4, 2, 0.7, 0.9).top_p == 0.9
    assert gen._config(4, 2, 0.7).top_p == 0.5  # None: the checkpoint's own
    assert gen._config(4, 1, 0.0, 0.9).do_sample is False  # greedy ignores top_p
