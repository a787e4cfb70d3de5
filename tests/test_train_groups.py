"""AdamW parameter groups of the world-model trainer against HF Trainer's rule (the paper
trains with HF Trainer, whose create_optimizer decays only Trainer.get_decay_parameter_names)."""

import pytest
import torch
from transformers import Trainer

from ftlab import ddp
from ftlab.modeling import build_model
from ftlab.tokenizer import build_char_tokenizer
from ftlab.train_setup import _make_optimizer, _Run, decay_param_groups

PAPER_MODEL = {"layers": 6, "hidden": 128, "heads": 4, "ffn": 512, "max_length": 256,
               "init_std": 0.1}  # fmt: skip
TINY_MODEL = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 64, "init_std": 0.1}


def _names(model, params) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


@pytest.mark.parametrize("cfg", [PAPER_MODEL, TINY_MODEL])
def test_groups_match_hf_trainer(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, build_char_tokenizer())
    decay, no_decay = decay_param_groups(model, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    names = {n for n, _ in model.named_parameters()}
    hf = set(Trainer.get_decay_parameter_names(None, model)) & names  # self is unused
    assert _names(model, decay["params"]) == hf
    assert _names(model, no_decay["params"]) == names - hf
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    if cfg is PAPER_MODEL:  # q/k/v/o/gate/up/down per layer, embeddings, lm_head
        assert (len(decay["params"]), len(no_decay["params"])) == (44, 31)
    assert all("bias" in n or "norm" in n for n in names - hf)


@pytest.mark.parametrize("fast", [False, True])
def test_trainer_optimizer_decays_only_the_decay_group(fast):
    """One AdamW step with zero gradients, lr 1 and weight decay 0.5 halves exactly the
    decayed weights and leaves biases and norm weights as they were."""
    torch.manual_seed(1)
    model = build_model(TINY_MODEL, build_char_tokenizer())
    run = _Run(
        model_name="m", training={"lr": 1.0, "weight_decay": 0.5}, total_steps=1,
        dev=torch.device("cpu"), world=ddp.World(), precision="fp32", fast=fast, model=model,
        multiplier=lambda i: 1.0,
    )  # fmt: skip
    _make_optimizer(run)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    run.optimizer.step()
    hf = set(Trainer.get_decay_parameter_names(None, model))
    for n, p in model.named_parameters():
        want = before[n] * 0.5 if n in hf else before[n]
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-7, msg=n)
