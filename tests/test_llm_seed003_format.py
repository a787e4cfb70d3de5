r"""llm.prompt_format: seed003 - seed 003's prompts, GT-SFT targets, chat template and reward
(GitHub Emilianopp/forgetting-llms @ 9187362: scripts/preprocess_data.py,
src/rewards/unified_reward.py, src/data/generate_teacher_solutions.py), checked against
planted completions whose scores are worked out by hand from the seed's rules."""

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from ftlab.config import ConfigError, validate_config
from ftlab.llm import data, teacher, tiny
from ftlab.llm import train as llm_train
from ftlab.llm.recipes import GRPORecipe, SFTRecipe
from ftlab.llm.rewards import seed003_reward, seed003_score
from ftlab.llm.steps import gt_sft_records

REPO = Path(__file__).resolve().parents[1]
MATH_I = "Please reason step by step, and put your final answer within \\boxed{}."
QA_I = "Answer the question directly. Put your final answer after 'The answer is: '."
GSM_RAW = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
# A user turn and the assistant's opening, as a Qwen-style template renders them.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _gsm_row(tmp_path, answer_text=GSM_RAW):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "How many clips? ", "answer": answer_text}) + "\n")
    return data.load_rows(str(path), "gsm8k")[0]


def test_prompts_are_the_seeds(tmp_path):
    row = _gsm_row(tmp_path)
    assert data.prompt_for(row, "seed003", "gsm8k") == f"How many clips?\n\n{MATH_I}"
    assert data.prompt_for(row, "seed003", "math") == f"How many clips?\n\n{MATH_I}"
    assert data.prompt_for(row, "seed003", "triviaqa") == f"How many clips?\n\n{QA_I}"
    with pytest.raises(ValueError, match="needs the row format"):
        data.prompt_for(row, "seed003")


def test_gt_targets_are_the_seeds(tmp_path):
    row = _gsm_row(tmp_path)
    assert row["solution_raw"] == GSM_RAW and "<<" not in row["solution"]
    assert data.seed003_target(row, "gsm8k") == (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n\\boxed{72}"
    )
    comma = _gsm_row(tmp_path, "So 500 + 500 = <<500+500=1000>>1000.\n#### 1,000")
    assert data.seed003_target(comma, "gsm8k") == (
        "So 500 + 500 = <<500+500=1000>>1000.\n\\boxed{1000}"
    )
    math = {"question": "q", "answer": "5", "solution": "It is $\\boxed{5}$."}
    assert data.seed003_target(math, "math") == "It is $\\boxed{5}$."
    trivia = {"question": "q", "answer": "Paris", "aliases": ["Paris", "Paname"]}
    assert data.seed003_target(trivia, "triviaqa") == "The answer is: Paris"
    with pytest.raises(ValueError, match="solution_raw"):
        data.seed003_target({"id": "x", "answer": "1", "solution": "1\n#### 1"}, "gsm8k")


def test_gt_records_carry_the_chat_template_flag(tmp_path):
    rows = tmp_path / "rows.jsonl"
    data.write_jsonl(rows, [_gsm_row(tmp_path)])
    gt_sft_records(str(rows), str(tmp_path / "r.jsonl"), fmt="gsm8k", prompt_format="seed003")
    (rec,) = data.read_jsonl(tmp_path / "r.jsonl")
    target = data.seed003_target(_gsm_row(tmp_path), "gsm8k")
    assert rec == {"prompt": f"How many clips?\n\n{MATH_I}", "completion": target,
                   "chat_template": True}  # fmt: skip
    gt_sft_records(str(rows), str(tmp_path / "t.jsonl"), fmt="gsm8k")  # default: tags
    (tags,) = data.read_jsonl(tmp_path / "t.jsonl")
    assert "chat_template" not in tags and "<answer>72</answer>" in tags["completion"]
    with pytest.raises(ValueError, match="'llm.prompt_format': unknown 'boxed'"):
        gt_sft_records(str(rows), str(tmp_path / "x.jsonl"), fmt="gsm8k", prompt_format="boxed")


MATH_CASES = [  # (completion, gold, reward) - unified_reward.math_score
    ("so 48 + 24 = 72, \\boxed{72}", "72", 1.0),
    ("\\boxed{72.0}", "72", 1.0),  # normalize_number: trailing .0 and float -> int
    ("\\boxed{7 2}", "72", 1.0),  # spaces removed before the number is read
    ("\\boxed{1,000}", "1000", 1.0),
    ("no box\n#### 1,000", "1000", 1.0),  # #### N when there is no box
    ("\\boxed{71}\n#### 72", "72", 0.0),  # the box wins over ####
    ("\\boxed{1} then \\boxed{2}", "2", 1.0),  # the last box
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # equal strings
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 0.0),  # no LaTeX equivalence
    ("\\boxed{0.5}", "\\frac{1}{2}", 0.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", 0.0),  # too deep: no answer
    ("\\boxed{}", "0", 0.0),
    ("<answer>72</answer>", "72", 0.0),  # tags earn nothing
    ("the answer is 72", "72", 0.0),  # no last-number fallback
]


@pytest.mark.parametrize(("text", "gold", "reward"), MATH_CASES)
def test_math_reward_is_the_seeds(text, gold, reward):
    for fmt in ("gsm8k", "math"):
        assert seed003_score(text, {"answer": gold, "aliases": []}, fmt) == reward


QA_CASES = [  # (completion, aliases, reward) - unified_reward.qa_score
    ("The answer is: Paris.", ["Paris", "Paris, France"], 1.0),
    ("the answer is: PARIS", ["Paris"], 1.0),
    ("I think it is Paris", ["Paris"], 1.0),  # no marker: the last line, containing the alias
    ("Thinking...\nThe answer is: Lyon. Not Paris.", ["Paris"], 0.0),  # up to the first "."
    ("The answer is: Paris\nbecause", ["Paris"], 1.0),  # no "." - up to the end
    ("The answer is: Leonardo", ["Leonardo da Vinci"], 1.0),  # contained in the alias
    ("The answer is: York City USA", ["New York City"], 1.0),  # token F1 2/3
    ("The answer is: Boston City", ["New York City"], 0.0),  # token F1 0.4
    ("The answer is: .", ["Paris"], 1.0),  # the seed's quirk: "" is in every alias
    ("The answer is: Lyon", ["", "Paris"], 0.0),  # empty aliases are skipped
]


@pytest.mark.parametrize(("text", "aliases", "reward"), QA_CASES)
def test_triviaqa_reward_is_the_seeds(text, aliases, reward):
    assert seed003_score(text, {"answer": aliases[-1], "aliases": aliases}, "triviaqa") == reward


def test_reward_function_for_trl():
    completions = ["\\boxed{5}", [{"role": "assistant", "content": "The answer is: Rome"}], "x"]
    got = seed003_reward(completions, answer=["5", "Roma", "5"], fmt=["gsm8k", "triviaqa", "math"],
                         aliases=[[], ["Roma", "Rome"], []])  # fmt: skip
    assert got == [1.0, 1.0, 0.0]
    with pytest.raises(KeyError, match="'answer' and 'fmt'"):
        seed003_reward(["x"], answer=["1"])


def test_teacher_keeps_the_first_sample_the_seed_accepts():
    rows = [{"id": "0", "question": "1+1?", "answer": "2", "aliases": []},
            {"id": "1", "question": "2+2?", "answer": "4", "aliases": []}]  # fmt: skip
    gens = [["<think>hm</think>\\boxed{3}", "<think>ok</think>So \\boxed{2}", "\\boxed{2}."],
            ["<reasoning>r</reasoning><answer>4</answer>"]]  # fmt: skip
    records, counts = teacher.verify_and_keep(rows, gens, "gsm8k", "seed003", keep="first")
    assert records == [
        {
            "prompt": f"1+1?\n\n{MATH_I}",
            "completion": "<think>ok</think>So \\boxed{2}",
            "chat_template": True,
        }
    ]
    assert counts["n_questions_solved"] == 1 and counts["n_generated"] == 4


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    tiny.build_tiny_causal_lm(out, seed=0, layers=1, hidden=16, heads=2, max_length=512)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    return str(out)


def test_grpo_prompts_in_the_chat_template(chat_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(chat_model)
    row = {"id": "0", "question": "1+1?", "answer": "2", "aliases": []}
    (out,) = llm_train.grpo_dataset_rows([row], "math", tok, 400, "seed003")
    assert out["prompt"] == f"<|im_start|>user\n1+1?\n\n{MATH_I}<|im_end|>\n<|im_start|>assistant\n"
    assert llm_train.grpo_dataset_rows([row], "math", tok, 400)[0]["prompt"] == (
        data.prompt_for(row, "reasoning")
    )  # the default: tags
    bare = tiny.build_tiny_tokenizer()
    with pytest.raises(ValueError, match="seed003 needs the base model's chat template"):
        llm_train.grpo_dataset_rows([row], "math", bare, 400, "seed003")


def _section(cls, **over):
    base = validate_config({"kind": "llm", "study": "t", "llm": {"datasets": {
        "g": {"format": "gsm8k", "train": "a", "test": "b"}}}})["llm"][cls.section]  # fmt: skip
    return cls.from_config({**base, **over})


def test_tiny_sft_and_grpo_train_in_the_seed_format(chat_model, tmp_path, monkeypatch):
    rows = [{"id": str(i), "question": f"{i}+1?", "answer": str(i + 1), "aliases": [],
             "solution": f"{i}+1={i + 1}\n#### {i + 1}",
             "solution_raw": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
            for i in range(4)]  # fmt: skip
    records = tmp_path / "records.jsonl"
    data.write_jsonl(records, data.sft_records(rows, "gt", "seed003", "gsm8k"))
    seen = {}
    real = llm_train.sft_length_report

    def spy(recs, tok, max_length):  # what the trainer is given
        seen["prompts"] = [r["prompt"] for r in recs]
        return real(recs, tok, max_length)

    monkeypatch.setattr(llm_train, "sft_length_report", spy)
    llm_train.run_sft(
        _section(SFTRecipe, max_steps=1, save_steps=1, batch_size=2, grad_accum=1,
                 max_length=256, lr=1e-4),
        base_model=chat_model, records_path=str(records), out_dir=str(tmp_path / "sft"),
        state_dir=str(tmp_path / "sft_state"), seed=0,
    )  # fmt: skip
    assert seen["prompts"][0] == (
        f"<|im_start|>user\n0+1?\n\n{MATH_I}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (tmp_path / "sft" / "checkpoint-1").is_dir()

    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, rows)
    rewarded = []
    monkeypatch.setattr(llm_train, "seed003_reward",
                        lambda completions, **kw: rewarded.append(kw["prompts"]) or
                        seed003_reward(completions, **kw))  # fmt: skip
    llm_train.run_grpo(
        _section(GRPORecipe, max_steps=1, save_steps=1, batch_size=4, num_generations=2,
                 max_prompt_length=400, max_completion_length=8, lr=1e-4),
        base_model=chat_model, rows_path=str(rows_path), fmt="gsm8k",
        out_dir=str(tmp_path / "grpo"), state_dir=str(tmp_path / "grpo_state"), seed=0,
        prompt_format="seed003",
    )  # fmt: skip
    assert rewarded and all(p.startswith("<|im_start|>user\n") for p in rewarded[0])
    info = json.loads((tmp_path / "grpo" / "checkpoint-1" / "ftlab_checkpoint.json").read_text())
    assert info["prompt_format"] == "seed003"  # recorded (and in the resume fingerprint)


def test_seed003_config_selects_the_seed_format():
    cfg = validate_config(yaml.safe_load(
        (REPO / "config/experiments/forgetting_qwen3_1.7b.yaml").read_text()))  # fmt: skip
    assert cfg["llm"]["prompt_format"] == "seed003"
    assert cfg["llm"]["in_domain"]["prompt_style"] == "seed003"  # as the models were trained
    base = {"kind": "llm", "study": "t", "llm": {"datasets": {
        "g": {"format": "gsm8k", "train": "a", "test": "b"}}}}  # fmt: skip
    assert validate_config(base)["llm"]["prompt_format"] == "tags"
    with pytest.raises(ConfigError, match="prompt_format"):
        validate_config({**base, "llm": {**base["llm"], "prompt_format": "boxed"}})


def test_in_domain_seed003_style(tmp_path):
    """prompt_style seed003: seed 003's prompts and the scores of seed003_completion_scores
    on planted completions."""
    from ftlab.llm import in_domain as ev

    rows = [{"id": str(i), "question": f"q{i}", "answer": a, "aliases": []}
            for i, a in enumerate(["72", "100", "100", "5"])]  # fmt: skip
    canned = {
        f"q0\n\n{MATH_I}": "so \\boxed{72}",  # correct, partial, format
        f"q1\n\n{MATH_I}": "#### 95",  # wrong, within 10%, format
        f"q2\n\n{MATH_I}": "it is 100",  # no answer where asked: nothing
        f"q3\n\n{MATH_I}": "\\boxed{\\frac{10}{2}}",  # a string, not 5: within 10% only
    }
    seen = []

    def generate(prompts, max_new_tokens):
        seen.extend(prompts)
        return [canned[p] for p in prompts]

    out, samples = ev.score_in_domain(
        model="stub", rows=rows, fmt="gsm8k", cache_path=str(tmp_path / "c.db"),
        prompt_style="seed003", generate_fn=generate,
    )  # fmt: skip
    assert seen == list(canned)
    assert [(s["correct"], s["partial"], s["format"]) for s in samples] == [
        (1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.0, 1.0, 1.0)
    ]  # fmt: skip
    assert (out["accuracy"], out["partial_accuracy"], out["format_accuracy"]) == (0.25, 0.75, 0.75)
    trivia = {"answer": "Paris", "aliases": ["Paris"]}
    assert rewards_scores("Hmm.\nThe answer is: Paris.", trivia) == (True, True, True)
    assert rewards_scores("Paris", trivia) == (True, True, False)  # right, not where asked


def rewards_scores(text, row):
    from ftlab.llm.rewards import seed003_completion_scores

    s = seed003_completion_scores(text, row, "triviaqa")
    return s["correct"], s["partial"], s["format"]
