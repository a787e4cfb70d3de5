"""The seed-002 config (config/experiments/simpletir_qwen2.5_7b.yaml) pinned against the seed
(/work/shared/seeds/002: SimpleTIR's experiment guide) and SimpleTIR's code at ltzheng/SimpleTIR
e7b5b44: evaluation n = 32, max_turns 10, max_response_length 8000, its datasets, the sampling
of each tool mode, the tools-off prompt, per-run samplings; the schema defaults of the turn
budget; a planted parquet shaped like SimpleTIR's loads through the seed's dataset entries."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ftlab.config import ConfigError, validate_config
from ftlab.io import read_jsonl
from ftlab.tir.steps import prepare_rows
from ftlab.tir.study import TIRStudy, prompt_template

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "config/experiments/simpletir_qwen2.5_7b.yaml"
# recipe/simpletir/config/simpletir_trainer.yaml data.prompt (braces doubled for str.format)
TOOL_PROMPT = """Solve the following problem step by step. You now have the ability to selectively write executable Python code to enhance your reasoning process. The Python code will be executed by an external sandbox, and the output (after "Code execution result: ") is returned to aid your reasoning and help you arrive at the final answer. The Python code should be complete scripts, including necessary imports.

Code Format:
Each code snippet is wrapped between ```. You need to use `print()` to output intermediate results.

Answer Format:
You can use the `final_answer()` function in the code to return your final answer. For example, to answer the User Question: What is the result of the 5 + 3 + 1294.678?, you can write:
```py
answer = 5 + 3 + 1294.678
final_answer(answer)
```

You can also use \\boxed to return your answer. The last part of your response should be:
\\boxed{{'The final answer goes here.'}}

User Question:
"""  # noqa: E501
# Qwen2.5's chat template with no system message (train.sh APPLY_CHAT_TEMPLATE=True)
QWEN_CHAT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def cfg():
    return validate_config(yaml.safe_load(SEED.read_text()))


def test_evaluation_is_the_seeds(cfg):
    # seed: --max_turns 10 --n_val 32; max_response_length 8000; train.sh TEMPERATURE=1.0,
    # TOP_P=1.0 (run_llm_loop's turns sample with the rollout's settings)
    t1 = cfg["tir"]["eval"]["samplings"]["t1"]
    assert t1 == {"n": 32, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8000,
                  "max_turns": 10, "max_context_tokens": None, "max_prompt_tokens": 16000,
                  "tools": True}  # fmt: skip
    # tools off, generate_sequences samples with val_kwargs: VAL_TEMPERATURE=1.0, top_p 0.7
    single = cfg["tir"]["eval"]["samplings"]["single"]
    assert single == {"n": 32, "temperature": 1.0, "top_p": 0.7, "max_new_tokens": 8000,
                      "max_turns": 1, "max_context_tokens": None, "max_prompt_tokens": 16000,
                      "tools": False}  # fmt: skip
    assert cfg["tir"]["grpo"]["max_new_tokens"] == 8000
    assert cfg["tir"]["grpo"]["max_prompt_tokens"] == 16000  # max_prompt_length


def test_datasets_are_simpletirs_parquet_files(cfg):
    # seed: --valid_dataset deepscaler/aime deepscaler/aime25 simplelr_math_35/test,
    # --train_dataset "simplelr_math_35/train deepscaler/train" (DATA_PATH/<name>.parquet)
    tir = cfg["tir"]
    files = {
        name: [f"{src}/{spec['split']}.parquet" for src in
               (spec["source"] if isinstance(spec["source"], list) else [spec["source"]])]
        for name, spec in tir["datasets"].items()
    }  # fmt: skip
    assert files == {
        "aime24": ["deepscaler/aime.parquet"],
        "aime25": ["deepscaler/aime25.parquet"],
        "math500": ["simplelr_math_35/test.parquet"],
        "train": ["simplelr_math_35/train.parquet", "deepscaler/train.parquet"],
    }
    assert tir["eval"]["datasets"] == ["aime24", "aime25", "math500"]
    assert {r["dataset"] for r in tir["runs"].values()} == {"train"}
    for spec in tir["datasets"].values():
        assert spec["question_field"] == "prompt.0.content"
        assert spec["answer_field"] == "reward_model.ground_truth"


def test_a_planted_simpletir_parquet_loads_with_the_seeds_entries(cfg, tmp_path):
    rows = [{"data_source": "deepscaler", "prompt": [{"content": "Find $x$.", "role": "user"}],
             "ability": "math", "reward_model": {"ground_truth": "204", "style": "rule"},
             "extra_info": {"index": 0, "split": "test"}}]  # fmt: skip
    (tmp_path / "deepscaler").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "deepscaler/aime.parquet")
    out = tmp_path / "rows.jsonl"
    prepare_rows("aime24", cfg["tir"]["datasets"]["aime24"], str(out), data_root=str(tmp_path))
    assert read_jsonl(out) == [{"id": "aime24-0", "question": "Find $x$.", "answer": "204"}]


def test_tools_off_prompt_is_the_question_alone_in_the_chat_template(cfg):
    # rl_dataset.py prepends data.prompt only when tool_use is on
    tir = cfg["tir"]
    q = "What is 6 * 7?"
    assert prompt_template(tir, True).format(question=q) == QWEN_CHAT.format(
        content=TOOL_PROMPT.replace("{{", "{").replace("}}", "}") + q
    )
    assert prompt_template(tir, False).format(question=q) == QWEN_CHAT.format(content=q)


def test_each_run_is_evaluated_with_its_own_tool_use(cfg):
    study = TIRStudy(cfg)
    runs = cfg["tir"]["runs"]
    assert {n: (r["tools"], r["mask_void_turns"], r["max_turns"]) for n, r in runs.items()} == {
        "singleturn": (False, False, 1),
        "multiturn-nomask": (True, False, 5),
        "multiturn-mask": (True, True, 5),
    }
    samplings = cfg["tir"]["eval"]["samplings"]
    for name, run in study.runs.items():
        assert {samplings[s]["tools"] for s in study.samplings_of(name)} == {run.tools}
    assert study.samplings_of("base") == ["t1", "single"]
    jobs = study.eval_jobs()
    # base: 3 datasets x 2 samplings; 3 runs x 10 checkpoints x 3 datasets x 1 sampling
    assert len(jobs) == 6 + 3 * 10 * 3 == len(set(jobs))
    assert {e for m, _, e in jobs if m == "singleturn_seed1"} == {
        "aime24__single",
        "aime25__single",
        "math500__single",
    }


def test_run_samplings_must_name_eval_samplings():
    cfg = yaml.safe_load(SEED.read_text())
    cfg["tir"]["runs"]["singleturn"]["samplings"] = ["nope"]
    with pytest.raises(ConfigError, match=r"'tir.runs.singleturn.samplings' names 'nope'"):
        validate_config(cfg)
    cfg["tir"]["runs"]["singleturn"]["samplings"] = []
    with pytest.raises(ConfigError, match=r"'tir.runs.singleturn.samplings' is empty"):
        validate_config(cfg)


def test_schema_turn_budgets_default_to_simpletirs_max_response_length():
    cfg = validate_config({"kind": "tir", "study": "s", "tir": {
        "datasets": {"a": {"source": "builtin:arith"}},
        "eval": {"datasets": ["a"], "samplings": {"s": {}}},
    }})  # fmt: skip
    assert cfg["tir"]["eval"]["samplings"]["s"]["max_new_tokens"] == 8000
    assert cfg["tir"]["grpo"]["max_new_tokens"] == 8000
    assert cfg["tir"]["eval"]["samplings"]["s"]["max_prompt_tokens"] == 16000
    assert cfg["tir"]["grpo"]["max_prompt_tokens"] == 16000
    assert cfg["tir"]["plain_prompt_template"] == cfg["tir"]["prompt_template"]


def test_a_bad_plain_prompt_names_its_key():
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["plain_prompt_template"] = "Answer in \\boxed{}. {question}"
    with pytest.raises(ConfigError, match=r"'tir\.plain_prompt_template' cannot be filled"):
        validate_config(cfg)
