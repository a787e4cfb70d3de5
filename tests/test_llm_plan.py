"""The seed-003 study as configured: `ftlab plan` prints exactly seed 003's runs and
checkpoints; SFT length in epochs or steps; per-run overrides; CF-SFT as a method; config errors
that name their key."""

import re
from pathlib import Path

import pytest

from ftlab import cli
from ftlab.config import ConfigError, load_config, validate_config
from ftlab.llm.study import LLMStudy, epoch_steps

REPO = Path(__file__).resolve().parents[1]
SEED003 = REPO / "config/experiments/forgetting_qwen3_1.7b.yaml"


def test_plan_prints_seed_003_runs_and_checkpoints(capsys):
    assert cli.main(["plan", str(SEED003)]) == 0
    out = capsys.readouterr().out
    table = out.split("evaluated checkpoints")[0].splitlines()
    rows = {w[0]: w[1:5] for w in map(str.split, table) if w and w[0].endswith("_seed1")}
    # seed 003's table: run -> (trainer, steps, every, checkpoints)
    expected = {
        "gt_sft-gsm8k_seed1": ["sft", "1401", "100", "15"],
        "gt_sft-math_seed1": ["sft", "1386", "100", "14"],
        "gt_sft-triviaqa_seed1": ["sft", "1404", "100", "15"],
        "grpo-gsm8k_seed1": ["grpo", "1200", "200", "6"],
        "grpo-math_seed1": ["grpo", "800", "200", "4"],
        "grpo-triviaqa_seed1": ["grpo", "1000", "200", "5"],
    }
    for run, cols in expected.items():
        assert rows[run] == cols, run
    assert "3 epochs x (7473 records // 16)" in out
    study = LLMStudy(load_config(SEED003))
    assert study.run("gt_sft-math_seed1").saved_steps == (*range(100, 1301, 100), 1386)
    assert study.run("grpo-triviaqa_seed1").eval_steps == (200, 400, 600, 800, 1000)
    recipe = study.recipe("grpo-math_seed1")
    assert (recipe["max_steps"], recipe["save_steps"]) == (800, 200)
    sft = study.recipe("gt_sft-gsm8k_seed1")
    assert (sft["max_steps"], sft["epochs"], sft["batch_size"] * sft["grad_accum"]) == (1401, 3, 16)


def test_epoch_steps_is_seed_003s_count():
    assert [epoch_steps(n, 3, 16) for n in (7473, 7397, 7500)] == [1401, 1386, 1404]
    assert epoch_steps(100, 0.5, 16) == 3  # ceil(0.5 * 6)
    with pytest.raises(ValueError, match="no full batch"):
        epoch_steps(10, 1, 16)


def _cfg(**llm):
    base = {"datasets": {"gsm8k": {"format": "gsm8k", "train": "a", "test": "b",
                                   "rows": {"train": 100, "cf_teacher": 50}}},
            "methods": ["gt_sft", "cf_sft", "grpo"],
            "cf_teacher": {"model": "meta-llama/Llama-3.1-70B-Instruct"},
            "sft": {"epochs": 2, "batch_size": 2, "grad_accum": 4, "save_steps": 5}}  # fmt: skip
    return {"kind": "llm", "study": "t", "llm": {**base, **llm}}


def test_cf_sft_and_per_run_overrides():
    study = LLMStudy(validate_config(_cfg(runs={"grpo-gsm8k": {"max_steps": 30, "save_steps": 10},
                                              "gt_sft-gsm8k": {"max_steps": 7}})))  # fmt: skip
    assert study.run("cf_sft-gsm8k_seed1").total_steps == 2 * (50 // 8) == 12
    assert study.run("cf_sft-gsm8k_seed1").records_source == "cf_teacher"
    assert study.run("gt_sft-gsm8k_seed1").total_steps == 7  # max_steps beats epochs
    assert study.run("grpo-gsm8k_seed1").saved_steps == (10, 20, 30)
    assert study.teacher_sources() == ["cf_teacher"]
    assert "teacher jobs: 1 (cf_teacher: meta-llama/Llama-3.1-70B-Instruct)" in study.plan()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cf_teacher": {}}, "'llm.cf_teacher.model' is not set but cf_sft needs it"),
        ({"datasets": {"gsm8k": {"format": "gsm8k", "train": "a", "test": "b",
                                 "rows": {"train": 100}}}},
         "'llm.datasets.gsm8k.rows.cf_teacher' is not set: cf_sft on gsm8k is 2 epochs"),
        ({"runs": {"dpo-gsm8k": {"max_steps": 3}}},
         "'llm.runs.dpo-gsm8k': not a <method>-<dataset>"),
        ({"runs": {"grpo-gsm8k": {"epochs": 1}}}, "'llm.runs.grpo-gsm8k.epochs': GRPO runs"),
        ({"datasets": {"gsm8k": {"format": "gsm8k", "train": [], "test": "b"}}},
         "llm.datasets.gsm8k.train"),
        ({"grpo": {"batch_size": 6, "num_generations": 8}},
         "'llm.grpo.batch_size' x 'llm.grpo.grad_accum' (6 x 1 = 6 completions per process "
         "and step) must be a multiple of 'llm.grpo.num_generations' (8)"),
        ({"grpo": {"batch_size": 2, "grad_accum": 3, "num_generations": 4}},
         "'llm.grpo.num_generations' (4)"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(_cfg(**change))


@pytest.mark.parametrize(("batch", "accum", "gens"), [(6, 1, 8), (2, 3, 4), (4, 2, 8), (8, 1, 8)])
def test_grpo_batch_check_agrees_with_trl(batch, accum, gens):
    """check_config rejects a GRPO batch before any job exactly when TRL's GRPOConfig would
    (one process: generation batch = batch_size x grad_accum, divisible by num_generations)."""
    trl = pytest.importorskip("trl")
    try:
        trl.GRPOConfig(output_dir="unused", per_device_train_batch_size=batch,
                       gradient_accumulation_steps=accum, num_generations=gens,
                       use_cpu=True, report_to="none")  # fmt: skip
        trl_ok = True
    except ValueError as e:
        assert "divisible by num_generations" in str(e)
        trl_ok = False
    assert trl_ok is ((batch * accum) % gens == 0)
    change = {"grpo": {"batch_size": batch, "grad_accum": accum, "num_generations": gens}}
    if trl_ok:
        validate_config(_cfg(**change))
    else:
        with pytest.raises(ConfigError, match="llm.grpo.num_generations"):
            validate_config(_cfg(**change))
