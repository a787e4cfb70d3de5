"""TIR GRPO settings handed to TRL, against SimpleTIR's train.sh (ltzheng/SimpleTIR e7b5b44):
CLIP_RATIO=0.2_0.28 (clip-higher), LR_DECAY=1.0 (constant rate), and the per-turn budget
tir.grpo.max_new_tokens on the vLLM path."""

from pathlib import Path

import pytest
import yaml

from ftlab.config import validate_config
from ftlab.tir.train import TIRRecipe, _policy_generator

REPO = Path(__file__).resolve().parents[1]


def _recipe(**over):
    cfg = validate_config(
        yaml.safe_load((REPO / "config/experiments/simpletir_qwen2.5_7b.yaml").read_text())
    )
    run = cfg["tir"]["runs"]["multiturn-mask"]
    grpo = {**cfg["tir"]["grpo"], **over}
    return TIRRecipe(tools=run["tools"], mask_void_turns=run["mask_void_turns"],
                     max_turns=run["max_turns"], **grpo)  # fmt: skip


def test_seed_002_trl_config_is_simpletirs(tmp_path):
    args = _recipe().trl_config(str(tmp_path), seed=1, vllm=False)
    assert args.epsilon == 0.2 and args.epsilon_high == 0.28  # CLIP_RATIO=0.2_0.28
    assert (
        getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "constant"
    )  # LR_DECAY=1.0: no decay
    assert args.max_completion_length == 8000  # max_response_length


def test_scheduler_and_clip_options(tmp_path):
    warm = _recipe(warmup_steps=5).trl_config(str(tmp_path), seed=1, vllm=False)
    assert getattr(warm.lr_scheduler_type, "value", None) == "constant_with_warmup"
    lin = _recipe(lr_scheduler="linear", epsilon_high=0.2).trl_config(str(tmp_path), 1, False)
    assert getattr(lin.lr_scheduler_type, "value", None) == "linear" and lin.epsilon_high == 0.2
    with pytest.raises(ValueError, match="tir.grpo.lr_scheduler"):
        _recipe(lr_scheduler="step")
    with pytest.raises(ValueError, match="tir.grpo.epsilon_high"):
        _recipe(epsilon_high=0.1)


def test_vllm_turn_budget_is_max_new_tokens():
    recipe = _recipe(max_new_tokens=123, max_completion_length=8000)
    seen = []

    class Engine:
        max_completion_length = 8000

        def generate(self, ids, images, n):
            seen.append(self.max_completion_length)
            return ids, [[7, 8]] * len(ids), None, None

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text)}

        def batch_decode(self, ids, skip_special_tokens=True):
            return ["ab" for _ in ids]

    class Trainer:
        use_vllm = True
        vllm_generation = Engine()
        processing_class = Tok()

    trainer = Trainer()
    out = _policy_generator(trainer, recipe)(["ctx1", "ctx2"])
    assert seen == [123]  # one turn's budget while generating
    assert trainer.vllm_generation.max_completion_length == 8000  # restored afterwards
    assert [(g.text, g.n_tokens) for g in out] == [("ab", 2), ("ab", 2)]
