"""LLM study: data loading, rewards, tiny model, SFT/GRPO training + resume, teacher data."""

import dataclasses
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.config import validate_config
from ftlab.io import checkpoint_sha256
from ftlab.llm import data, rewards, teacher, tiny
from ftlab.llm import train as llm_train
from ftlab.llm.recipes import GRPORecipe, SFTRecipe

MATH_ROW = {
    "problem": "What is $\\frac{2}{4}$ in lowest terms?",
    "solution": "Divide both by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
    "level": "Level 1",
}
OPTIMIZER_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}
# The validated llm section of a minimal study: the schema's defaults of every recipe key.
LLM_DEFAULTS = validate_config(
    {"kind": "llm", "study": "t", "llm": {"datasets": {"g": {"format": "gsm8k", "train": "a",
                                                             "test": "b"}}}}
)["llm"]  # fmt: skip


def recipe_kwargs(cls, kw: dict) -> dict:
    """Flat test kwargs -> the trainer's arguments: recipe keys (over the schema defaults)
    become `recipe`, a JSON-able dict of the full config section; the rest stay."""
    names = {f.name for f in dataclasses.fields(cls)}
    section = {**LLM_DEFAULTS[cls.section], **{k: v for k, v in kw.items() if k in names}}
    return {"recipe": section, **{k: v for k, v in kw.items() if k not in names}}


def run_sft(**kw):
    kw = recipe_kwargs(SFTRecipe, kw)
    return llm_train.run_sft(SFTRecipe.from_config(kw.pop("recipe")), **kw)


def run_grpo(**kw):
    kw = recipe_kwargs(GRPORecipe, kw)
    return llm_train.run_grpo(GRPORecipe.from_config(kw.pop("recipe")), **kw)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return data.write_fixtures(tmp_path_factory.mktemp("fixtures"), n_train=16, n_test=8)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    return tiny.build_tiny_causal_lm(out, seed=0, layers=2, hidden=32, heads=2, max_length=512)


@pytest.fixture(scope="module")
def sft_records_path(fixtures, tmp_path_factory):
    rows = data.load_rows(fixtures["gsm8k"], "gsm8k")
    path = tmp_path_factory.mktemp("sft") / "records.jsonl"
    data.write_jsonl(path, data.sft_records(rows, "gt"))
    return str(path)


# -- data ---------------------------------------------------------------------------------------
def test_fixtures_round_trip(fixtures, tmp_path):
    gsm = data.load_rows(fixtures["gsm8k"], "gsm8k")
    assert len(gsm) == 16 and len(data.load_rows(fixtures["gsm8k"], "gsm8k", split="test")) == 8
    for row in gsm:
        assert set(row) == {"id", "question", "answer", "aliases", "solution", "solution_raw"}
        assert row["solution"].endswith(f"#### {row['answer']}") and "<<" not in row["solution"]
        assert "<<" in row["solution_raw"]  # the dataset's text (seed 003's SFT targets)
        assert rewards.extract_answer(row["solution"], "gsm8k") == row["answer"]
    trivia = data.load_rows(fixtures["triviaqa"], "triviaqa", limit=5)
    assert len(trivia) == 5
    for row in trivia:
        assert row["aliases"][0] == row["answer"] == row["solution"]
        assert row["id"].startswith("tqa_fixture_")
    # Deterministic, and the same rows come back from parquet and .json files.
    again = data.write_fixtures(tmp_path / "again", n_train=16, n_test=8)
    for name in ("gsm8k", "triviaqa"):
        for split in ("train", "test"):
            a = open(os.path.join(fixtures[name], f"{split}.jsonl")).read()
            assert a == open(os.path.join(again[name], f"{split}.jsonl")).read()
    raw = data.read_jsonl(os.path.join(fixtures["gsm8k"], "train.jsonl"))
    pd.DataFrame(raw).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "rows.json").write_text(json.dumps(raw))
    for src in (tmp_path / "train.parquet", tmp_path / "rows.json"):
        assert data.load_rows(str(src), "gsm8k") == gsm


def test_math_rows_and_nested_boxed(tmp_path):
    path = tmp_path / "math.jsonl"
    data.write_jsonl(path, [MATH_ROW])
    (row,) = data.load_rows(str(path), "math")
    assert row["answer"] == "\\frac{1}{2}" and row["id"] == "math-train-0"
    assert (
        data.last_boxed("a \\boxed{1} then \\boxed{x^{2}+\\frac{1}{2}} end") == "x^{2}+\\frac{1}{2}"
    )
    assert rewards.is_correct("\\dfrac{1}{2}", row, "math") and rewards.is_correct(
        "0.5", row, "math"
    )
    completion = data.sft_records([row], "gt")[0]["completion"]
    assert rewards.score_completion(completion, row, "math") == dict.fromkeys(
        ("correct", "partial", "format"), True
    )


def test_malformed_rows_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "What is 1+1?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*'answer'"):
        data.load_rows(str(bad), "gsm8k")
    bad.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*####"):
        data.load_rows(str(bad), "gsm8k")
    bad.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*boxed"):
        data.load_rows(str(bad), "math")
    bad.write_text(json.dumps({"question": "q", "answer": {"aliases": ["x"]}}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*answer\.value"):
        data.load_rows(str(bad), "triviaqa")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        data.load_rows("openai/gsm8k:main", "gsm8k")  # conftest sets the hub offline
    with pytest.raises(ValueError, match="unknown format"):
        data.load_rows(str(bad), "mmlu")


def test_prompts_and_records():
    row = {"question": "What is 2+3?", "answer": "5", "aliases": [], "solution": "2+3=5\n#### 5"}
    assert data.prompt_for(row, "plain") == "Question: What is 2+3?\nAnswer:"
    assert "<answer>" in data.prompt_for(row, "reasoning")
    (gt,) = data.sft_records([row], "gt")
    assert gt["completion"] == "<reasoning>2+3=5</reasoning>\n<answer>5</answer>"
    assert data.sft_records([row], "gt", style="plain")[0]["completion"] == " 2+3=5\n#### 5"
    (rec,) = data.sft_records([{**row, "teacher_completion": "T"}], "teacher")
    assert rec == {"prompt": data.prompt_for(row, "reasoning"), "completion": "T"}
    with pytest.raises(ValueError, match="teacher_completion"):
        data.sft_records([row], "teacher")


# -- rewards ------------------------------------------------------------------------------------
def test_extraction_order():
    ex = rewards.extract_answer
    assert ex("<reasoning>7 #### 8</reasoning><answer> 9 </answer>", "gsm8k") == "9"
    assert ex("so 3 + 4\n#### 7\nbye 10", "gsm8k") == "7"
    assert ex("so \\boxed{\\frac{3}{4}} or 5", "math") == "\\frac{3}{4}"
    assert ex("<answer>so \\boxed{12}</answer>", "math") == "12"
    assert ex("first 12, then 1,500 apples", "gsm8k") == "1,500"  # lm-eval flexible-extract
    assert rewards.is_correct("1,500", {"answer": "1500"}, "gsm8k")
    assert ex("no digits here", "gsm8k") is None
    assert ex("\n  Paris \nmore", "triviaqa") == "Paris"
    assert ex("x <answer>Rome</answer>", "triviaqa") == "Rome"


def test_normalization_partial_and_aliases():
    row = {"answer": "1000", "aliases": []}
    assert rewards.normalize("1,000", "gsm8k") == rewards.normalize("1000.0", "gsm8k")
    for pred in ("1,000", "$1,000", "1000 dollars", "1000.", "x = 1000"):
        assert rewards.is_correct(pred, row, "gsm8k"), pred
    assert not rewards.is_correct("1000.0", row, "gsm8k")  # lm-eval's gsm8k: string match
    assert not rewards.is_correct("1001", row, "gsm8k")
    assert not rewards.is_correct(None, row, "gsm8k")
    hundred = {"answer": "100", "aliases": []}
    assert rewards.is_partial("110", hundred, "gsm8k") and rewards.is_partial(
        "90", hundred, "gsm8k"
    )
    assert not rewards.is_partial("111", hundred, "gsm8k")
    assert not rewards.is_partial("89", hundred, "gsm8k")
    assert not rewards.is_correct("110", hundred, "gsm8k")
    dc = {"answer": "Washington, D.C.", "aliases": ["Washington, D.C.", "Washington DC"]}
    assert rewards.is_correct("washington dc", dc, "triviaqa")
    assert rewards.is_correct("The Washington D.C.", dc, "triviaqa")
    assert rewards.is_partial("Washington DC", dc, "triviaqa")
    assert not rewards.is_correct("Paris", dc, "triviaqa")
    assert not rewards.is_correct("2x", {"answer": "2"}, "math")


def test_format_and_reward_functions():
    good = "<reasoning>3 + 4 = 7</reasoning>\n<answer>7</answer>"
    assert rewards.has_format(good) and rewards.has_format("  " + good + "\n")
    for bad in (
        "<answer>7</answer>",
        "7",
        good + " extra",
        "<reasoning></reasoning><answer>7</answer>",
    ):
        assert not rewards.has_format(bad), bad
    row = {"answer": "7", "aliases": []}
    assert rewards.score_completion(good, row, "gsm8k") == {
        "correct": True,
        "partial": True,
        "format": True,
    }
    completions = [good, "#### 7", "<reasoning>x</reasoning><answer>8</answer>"]
    kwargs = {"answer": ["7"] * 3, "aliases": [[]] * 3, "fmt": ["gsm8k"] * 3, "prompts": [""] * 3}
    # "#### 7" has no closed <answer> tag: no reward (in-domain scoring still reads it)
    assert rewards.correctness_reward(completions, **kwargs) == [1.0, 0.0, 0.0]
    assert rewards.score_completion("#### 7", row, "gsm8k")["correct"]
    assert rewards.format_reward(completions, **kwargs) == [1.0, 0.0, 1.0]
    conversational = [[{"role": "assistant", "content": good}]]
    assert rewards.correctness_reward(conversational, answer=["7"], fmt=["gsm8k"]) == [1.0]


# -- tiny model ---------------------------------------------------------------------------------
def test_tiny_model_loads_and_tokenizer_round_trips(tiny_model, fixtures):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert model.config.model_type == "qwen3" and model.config.num_hidden_layers == 2
    assert len(tok) == 100 and (tok.bos_token, tok.eos_token, tok.pad_token) == (
        tiny.BOS,
        tiny.EOS,
        tiny.PAD,
    )
    rows = data.load_rows(fixtures["gsm8k"], "gsm8k") + data.load_rows(
        fixtures["triviaqa"], "triviaqa"
    )
    for rec in data.sft_records(rows, "gt") + data.sft_records(rows, "gt", style="plain"):
        text = rec["prompt"] + rec["completion"]
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per char
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok("a b\nc")["input_ids"]) == [
        "<bos>",
        "a",
        " ",
        "b",
        "\n",
        "c",
    ]


def test_lm_eval_hflm_loads_tiny_model(tiny_model):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny_model, batch_size=2, device="cpu")
    req = Instance("loglikelihood", doc={}, arguments=("Question: 2+3?\nAnswer:", " 5"), idx=0)
    ((logprob, _),) = lm.loglikelihood([req])
    assert logprob < 0


# -- SFT ----------------------------------------------------------------------------------------
def sft_kwargs(tiny_model, records, root, **over):
    kw = dict(
        base_model=tiny_model,
        records_path=records,
        out_dir=str(root / "models" / "sft"),
        state_dir=str(root / "train_state" / "sft"),
        lr=1e-3,
        max_steps=4,
        save_steps=2,
        batch_size=4,
        grad_accum=1,  # the old function default (the schema default is 4)
        max_length=512,
        seed=0,
    )
    kw.update(over)
    return kw


def assert_published(out, steps, method):
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"checkpoint-{s}" for s in steps] + ["training_log.csv"]
    )
    for step in steps:
        ckpt = out / f"checkpoint-{step}"
        names = {p.name for p in ckpt.iterdir()}
        assert "model.safetensors" in names and "tokenizer.json" in names
        assert not names & OPTIMIZER_FILES and "training_args.bin" not in names
        info = json.loads((ckpt / "ftlab_checkpoint.json").read_text())
        assert info["method"] == method and info["step"] == step and info["seed"] == 0
        assert len(info["data_sha256"]) == 64 and info["hyperparameters"]["lr"] > 0
    model = AutoModelForCausalLM.from_pretrained(out / f"checkpoint-{steps[-1]}")
    assert model.config.model_type == "qwen3"


def test_sft_publishes_checkpoints(tiny_model, sft_records_path, tmp_path):
    kw = sft_kwargs(tiny_model, sft_records_path, tmp_path, meta={"study": "t"})
    run_sft(**kw)
    out = tmp_path / "models" / "sft"
    assert_published(out, [2, 4], "sft")
    assert not (tmp_path / "train_state" / "sft").exists()
    assert not any(p.name.startswith(".") for p in (tmp_path / "models").iterdir())
    info = json.loads((out / "checkpoint-4" / "ftlab_checkpoint.json").read_text())
    assert info["meta"] == {"study": "t"} and info["base_model"] == tiny_model
    assert info["base_model_sha256"] == checkpoint_sha256(tiny_model)
    log = pd.read_csv(out / "training_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and "loss" in log
    assert checkpoint_sha256(out / "checkpoint-4") != checkpoint_sha256(tiny_model)  # it trained


def test_sft_epochs_are_the_planned_full_batches(tiny_model, sft_records_path, tmp_path):
    """Length in epochs: an epoch is records // effective batch steps (study.epoch_steps,
    seed 003's count), so the checkpoints' recorded epoch is the planned one. transformers
    alone would count a partial last batch as a step: 21 records at 2 x 4 -> 3 steps an epoch,
    and epoch 1.33 after the planned 2 epochs' 4 steps."""
    from ftlab.llm.study import epoch_steps

    records = data.read_jsonl(sft_records_path)
    path = tmp_path / "records.jsonl"
    data.write_jsonl(path, (records * 2)[:21])
    steps = epoch_steps(21, 2, 2 * 4)
    assert steps == 2 * (21 // 8) == 4
    kw = sft_kwargs(tiny_model, str(path), tmp_path, max_steps=steps, save_steps=2,
                    batch_size=2, grad_accum=4, epochs=2)  # fmt: skip
    run_sft(**kw)
    out = tmp_path / "models" / "sft"
    for step, epoch in ((2, 1.0), (4, 2.0)):
        info = json.loads((out / f"checkpoint-{step}" / "ftlab_checkpoint.json").read_text())
        assert info["epoch"] == pytest.approx(epoch), step
    log = pd.read_csv(out / "training_log.csv")
    assert list(log["epoch"]) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_sft_length_report_counts_what_max_length_cuts(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    # character tokenizer with a BOS: prompt 10 chars + completion 5 + EOS = 1 + 10 + 5 + 1
    assert len(tok("Q" * 10 + "A" * 5 + tok.eos_token)["input_ids"]) == 17
    records = [{"prompt": "Q" * 10, "completion": "A" * 5},  # 17 tokens
               {"prompt": "Q" * 20, "completion": "A" * 2},  # 24, the prompt alone 21
               {"prompt": "Q", "completion": "A"}]  # 4  # fmt: skip
    got = llm_train.sft_length_report(records, tok, 16)
    assert got == {"records": 3, "max_length": 16, "truncated": 2, "no_completion_left": 1,
                   "longest_tokens": 24}  # fmt: skip
    assert llm_train.sft_length_report(records, tok, 17)["truncated"] == 1
    assert llm_train.sft_length_report(records, tok, None)["truncated"] == 0


def test_sft_warns_about_records_over_max_length(tiny_model, sft_records_path, tmp_path, caplog):
    records = data.read_jsonl(sft_records_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = sorted(len(tok(r["prompt"] + r["completion"])["input_ids"]) for r in records)
    max_length = lengths[len(lengths) // 2]  # about half the records are longer
    kw = sft_kwargs(tiny_model, sft_records_path, tmp_path, max_steps=1, save_steps=1,
                    max_length=max_length)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="ftlab.llm.train"):
        run_sft(**kw)
    info = json.loads(
        (tmp_path / "models" / "sft" / "checkpoint-1" / "ftlab_checkpoint.json").read_text()
    )
    expect = llm_train.sft_length_report(records, tok, max_length)
    assert info["sft_lengths"] == expect and expect["truncated"] >= len(records) // 2
    assert any("llm.sft.max_length" in r.getMessage() for r in caplog.records)


def test_sft_crash_before_publish_resumes_or_starts_over(
    tiny_model, sft_records_path, tmp_path, monkeypatch, caplog
):
    state = tmp_path / "train_state" / "sft"

    def crashed_run(**over):
        def crash(*a, **k):
            raise RuntimeError("killed before publishing")

        monkeypatch.setattr(llm_train, "publish", crash)
        with pytest.raises(RuntimeError):
            run_sft(**sft_kwargs(tiny_model, sft_records_path, tmp_path, **over))
        monkeypatch.undo()
        assert (state / "checkpoint-2" / "ftlab_checkpoint.json").is_file()

    def messages_of(**over):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ftlab.llm.train"):
            run_sft(**sft_kwargs(tiny_model, sft_records_path, tmp_path, **over))
        assert not state.exists()
        return [r.getMessage() for r in caplog.records if r.name == "ftlab.llm.train"]

    # Same run: resumes at its last step, trains nothing more, publishes.
    crashed_run(max_steps=2)
    messages = messages_of(max_steps=2)
    assert any(m.startswith("resuming from step 2") for m in messages), messages
    assert_published(tmp_path / "models" / "sft", [2], "sft")
    # Another seed: the stale checkpoints belong to a different run and are thrown away.
    crashed_run(max_steps=2)
    messages = messages_of(max_steps=2, seed=1)
    assert any("fingerprint mismatch" in m for m in messages), messages
    assert any("from scratch" in m for m in messages)
    info = json.loads((tmp_path / "models/sft/checkpoint-2/ftlab_checkpoint.json").read_text())
    assert info["seed"] == 1


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import transformers
    from ftlab.llm.recipes import SFTRecipe
    from ftlab.llm.train import run_sft

    class Slow(transformers.TrainerCallback):  # so the parent can kill it mid-training
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.5)

    kw = json.loads(sys.argv[1])
    run_sft(SFTRecipe.from_config(kw.pop("recipe")), **kw, callbacks=[Slow()])
    """
)


@pytest.mark.slow
def test_sft_resumes_after_sigkill(tiny_model, sft_records_path, tmp_path, caplog):
    kw = sft_kwargs(tiny_model, sft_records_path, tmp_path, max_steps=6)
    state = tmp_path / "train_state" / "sft"
    child_kw = json.dumps(recipe_kwargs(SFTRecipe, kw))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, child_kw], stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (state / "checkpoint-2" / "ftlab_checkpoint.json").is_file():
        if proc.poll() is not None:
            pytest.fail(proc.stderr.read().decode()[-3000:])
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "models" / "sft").exists()
    # A checkpoint the Trainer was writing when the kill came (no stamp) must be discarded.
    (state / "checkpoint-99").mkdir(exist_ok=True)
    (state / "checkpoint-99" / "model.safetensors").write_bytes(b"partial")

    with caplog.at_level(logging.INFO, logger="ftlab.llm.train"):
        run_sft(**kw)
    messages = [r.getMessage() for r in caplog.records if r.name == "ftlab.llm.train"]
    resumed = [m for m in messages if m.startswith("resuming from step")]
    assert resumed and int(resumed[0].split()[3]) >= 2, messages
    assert not any("from scratch" in m for m in messages)
    assert_published(tmp_path / "models" / "sft", [2, 4, 6], "sft")
    assert not state.exists()


# -- GRPO ---------------------------------------------------------------------------------------
def test_grpo_runs_and_publishes(tiny_model, fixtures, tmp_path):
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, data.load_rows(fixtures["gsm8k"], "gsm8k"))
    run_grpo(
        base_model=tiny_model, rows_path=str(rows_path), fmt="gsm8k",
        out_dir=str(tmp_path / "models" / "grpo"), state_dir=str(tmp_path / "state" / "grpo"),
        lr=1e-4, max_steps=2, save_steps=1, batch_size=4, num_generations=2,
        max_prompt_length=400, max_completion_length=12, seed=0,
    )  # fmt: skip
    out = tmp_path / "models" / "grpo"
    assert_published(out, [1, 2], "grpo")
    assert not (tmp_path / "state" / "grpo").exists()
    info = json.loads((out / "checkpoint-2" / "ftlab_checkpoint.json").read_text())
    assert info["data_format"] == "gsm8k" and info["hyperparameters"]["num_generations"] == 2
    log = pd.read_csv(out / "training_log.csv")
    assert "reward" in log and list(log["step"]) == [1, 2]
    with pytest.raises(ValueError, match="multiple of num_generations"):
        run_grpo(
            base_model=tiny_model, rows_path=str(rows_path), fmt="gsm8k", out_dir="x",
            state_dir="y", lr=1e-4, max_steps=1, save_steps=1, batch_size=3,
            num_generations=2, max_prompt_length=400, max_completion_length=8, seed=0,
        )  # fmt: skip


def test_recipes_carry_every_schema_knob_to_trl(tmp_path):
    from ftlab.config import load_schema

    llm_schema = load_schema()["properties"]["llm"]["properties"]
    # Every documented key of llm.sft / llm.grpo is a recipe field, and nothing else is.
    for cls in (SFTRecipe, GRPORecipe):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == set(llm_schema[cls.section]["properties"]), cls.section
    # Each knob, set away from its default, shows up in the TRL config the trainer receives.
    to_trl = {"lr": ("learning_rate", 3e-4), "max_steps": ("max_steps", 7),
              "save_steps": ("save_steps", 3), "batch_size": ("per_device_train_batch_size", 6),
              "grad_accum": ("gradient_accumulation_steps", 2),
              "warmup_steps": ("warmup_steps", 3),  # fractions: test_llm_seed003_config
              "lr_scheduler_type": ("lr_scheduler_type", "cosine"),
              "weight_decay": ("weight_decay", 0.05),
              "bf16": ("bf16", False)}  # fmt: skip
    sft_only = {"max_length": ("max_length", 99)}
    grpo_only = {"num_generations": ("num_generations", 3), "max_completion_length":
                 ("max_completion_length", 11), "beta": ("beta", 0.04),
                 "temperature": ("temperature", 0.7)}  # fmt: skip
    for cls, own in ((SFTRecipe, sft_only), (GRPORecipe, grpo_only)):
        section = {**LLM_DEFAULTS[cls.section], **{k: v for k, (_, v) in {**to_trl, **own}.items()}}
        if cls is GRPORecipe:
            section["format_weight"] = 0.25
        recipe = cls.from_config(section)
        extra = {"vllm": False} if cls is GRPORecipe else {}
        config = recipe.trl_config(str(tmp_path / cls.section), 5, **extra)
        for key, (attr, value) in {**to_trl, **own}.items():
            got = getattr(config, attr)
            assert getattr(got, "value", got) == value, (cls.section, key)
        assert config.seed == config.data_seed == 5
        if cls is GRPORecipe:
            assert config.reward_weights == [1.0, 0.25]  # correctness, format_weight * format
        else:  # loss on the completion only, one record per sequence (not schema knobs)
            assert config.completion_only_loss is True and config.packing is False
        # max_prompt_length filters the GRPO rows (grpo_dataset_rows), use_vllm picks vLLM.
        assert recipe.hyperparameters().keys() == {f.name for f in dataclasses.fields(cls)} - {
            "use_vllm"
        }
    with pytest.raises(ValueError, match="missing"):
        SFTRecipe.from_config({"lr": 1.0})
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPORecipe.from_config({**LLM_DEFAULTS["grpo"], "batch_size": 3, "num_generations": 2})


def test_grpo_dataset_rows_drop_over_long_prompts(tiny_model, caplog):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    qa = [("2+3?", "5"), ("x" * 50 + "?", "1"), ("4+4?", "8")]
    rows = [{"id": str(i), "question": q, "answer": a, "aliases": []}
            for i, (q, a) in enumerate(qa)]  # fmt: skip
    short = len(tok(data.prompt_for(rows[0], "reasoning"))["input_ids"])
    # the character tokenizer: the long question has 51 - 4 = 47 more characters and tokens
    assert len(tok(data.prompt_for(rows[1], "reasoning"))["input_ids"]) == short + 47
    with caplog.at_level(logging.WARNING, logger="ftlab.llm.train"):
        out = llm_train.grpo_dataset_rows(rows, "gsm8k", tok, max_prompt_length=short)
    assert [r["answer"] for r in out] == ["5", "8"]
    assert out[0] == {"prompt": data.prompt_for(rows[0], "reasoning"), "answer": "5",
                      "aliases": [], "fmt": "gsm8k"}  # fmt: skip
    assert any("dropped 1 of 3 prompts" in r.getMessage() for r in caplog.records)
    assert len(llm_train.grpo_dataset_rows(rows, "gsm8k", tok, short + 47)) == 3
    with pytest.raises(ValueError, match="no prompt fits max_prompt_length"):
        llm_train.grpo_dataset_rows(rows, "gsm8k", tok, short - 1)


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("varying", [True, False], ids=["varying_reward", "zero_reward"])
def test_grpo_updates_weights_only_under_an_advantage(
    tiny_model, fixtures, tmp_path, monkeypatch, varying
):
    """GRPO learns from reward differences within a group: a reward that varies between the
    completions of a prompt moves the weights; a zero reward (zero advantage) leaves them."""

    def varying_reward(completions, **kwargs):  # differs between sampled completions
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [float(sum(map(ord, t)) % 97) for t in texts]

    def zero_reward(completions, **kwargs):
        return [0.0] * len(completions)

    monkeypatch.setattr(llm_train, "correctness_reward", varying_reward if varying else zero_reward)
    monkeypatch.setattr(llm_train, "format_reward", zero_reward)
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, data.load_rows(fixtures["gsm8k"], "gsm8k", limit=4))
    out = tmp_path / "models" / "grpo"
    run_grpo(
        base_model=tiny_model, rows_path=str(rows_path), fmt="gsm8k", out_dir=str(out),
        state_dir=str(tmp_path / "state"), lr=1e-2, max_steps=1, save_steps=1, batch_size=4,
        num_generations=2, max_prompt_length=400, max_completion_length=8, seed=0,
    )  # fmt: skip
    before, after = _weights(Path(tiny_model)), _weights(out / "checkpoint-1")
    assert before.keys() == after.keys()
    moved = max((after[k].float() - before[k].float()).abs().max().item() for k in before)
    log = pd.read_csv(out / "training_log.csv")
    if varying:
        assert log["reward_std"].iloc[0] > 0 and moved > 1e-4
    else:
        assert log["reward"].iloc[0] == 0 and moved == 0


# -- teacher ------------------------------------------------------------------------------------
def test_verify_and_keep_with_stub_generator(fixtures, tmp_path):
    rows = data.load_rows(fixtures["gsm8k"], "gsm8k", limit=4)
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, rows)
    seen = []

    def stub(prompts, n):  # 1st sample right (with format), 2nd wrong; question 3: right
        seen.append((prompts, n))  # answers without the tag format, or cut off, only
        out = []
        for i, row in enumerate(rows):
            right = f"<reasoning>r</reasoning><answer>{row['answer']}</answer>"
            cut = f"<reasoning>so the answer is {row['answer']}"  # hit max_new_tokens
            bare = f"<answer>{row['answer']}</answer>"  # no reasoning: not the SFT format
            out.append([right, "<answer>-1</answer>"] if i != 3 else [cut, bare])
        return out

    report = teacher.generate_trajectories(
        teacher_model="stub", rows_path=str(rows_path), fmt="gsm8k",
        out_path=str(tmp_path / "kept.jsonl"), report_path=str(tmp_path / "report.json"),
        max_new_tokens=8, batch_size=2, samples_per_question=2, generate=stub,
    )  # fmt: skip
    assert seen[0][1] == 2 and seen[0][0] == [data.prompt_for(r, "reasoning") for r in rows]
    assert report["n_questions"] == 4 and report["n_generated"] == 8 and report["n_kept"] == 3
    assert report["pass_rate"] == pytest.approx(3 / 8) and report["n_questions_solved"] == 3
    assert json.loads((tmp_path / "report.json").read_text()) == report
    kept = data.read_jsonl(tmp_path / "kept.jsonl")
    assert [k["prompt"] for k in kept] == [data.prompt_for(r, "reasoning") for r in rows[:3]]
    assert all(k["completion"].startswith("<reasoning>") for k in kept)
    with pytest.raises(ValueError, match="generation lists"):
        teacher.verify_and_keep(rows, [["x"]], "gsm8k")


def test_teacher_hf_backend_with_tiny_model(tiny_model, fixtures, tmp_path, monkeypatch):
    rows = data.load_rows(fixtures["triviaqa"], "triviaqa")[:5]
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, rows)
    by_prompt = {data.prompt_for(r, "reasoning"): r for r in rows}
    real = teacher.hf_generator

    def planted(*args, **kwargs):  # the tiny model's samples plus a planted right, wrong and
        generate = real(*args, **kwargs)  # cut-off (right answer, no closed tag) sample each

        def both(prompts, n):
            out = generate(prompts, n)
            assert [len(o) for o in out] == [n] * len(prompts)
            for prompt, texts in zip(prompts, out, strict=True):
                answer = by_prompt[prompt]["answer"]
                texts += [f"<reasoning>r</reasoning><answer>{answer}</answer>",
                          "<reasoning>r</reasoning><answer>Atlantis</answer>",
                          f"<reasoning>it is {answer}"]  # fmt: skip
            return out

        return both

    monkeypatch.setattr(teacher, "hf_generator", planted)
    report = teacher.generate_trajectories(
        teacher_model=tiny_model, rows_path=str(rows_path), fmt="triviaqa",
        out_path=str(tmp_path / "kept.jsonl"), report_path=str(tmp_path / "report.json"),
        backend="hf", max_new_tokens=6, batch_size=3, samples_per_question=2,
        temperature=1.0, limit=5,
    )  # fmt: skip
    assert report["backend"] == "hf" and report["teacher_model"] == tiny_model
    assert report["n_questions"] == 5 and report["n_generated"] == 5 * (2 + 3)
    # exactly the planted right samples (random tiny-model text never has the tag format)
    kept = data.read_jsonl(tmp_path / "kept.jsonl")
    assert report["n_kept"] == len(kept) == 5 and report["n_questions_solved"] == 5
    assert [k["completion"] for k in kept] == [
        f"<reasoning>r</reasoning><answer>{r['answer']}</answer>" for r in rows
    ]
    assert report["pass_rate"] == pytest.approx(5 / 25)
    with pytest.raises(ValueError, match="unknown backend"):
        teacher.choose_backend("tgi")
    if importlib.util.find_spec("vllm") is None:  # the lazy import fails with a clear message
        assert teacher.choose_backend("auto") == "hf"
        with pytest.raises(RuntimeError, match="vllm package"):
            teacher.vllm_generator(tiny_model, max_new_tokens=4, temperature=0.0)
