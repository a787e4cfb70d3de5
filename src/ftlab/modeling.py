"""The study's model: a small Qwen2-style decoder built from a config dict."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM


def model_config(model_cfg: dict, tokenizer) -> Qwen2Config:
    """Qwen2Config for model_cfg keys layers, hidden, heads, ffn, max_length, init_std."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg["hidden"],
        intermediate_size=model_cfg["ffn"],
        num_hidden_layers=model_cfg["layers"],
        num_attention_heads=model_cfg["heads"],
        num_key_value_heads=model_cfg["heads"],
        max_position_embeddings=model_cfg["max_length"],
        initializer_range=model_cfg["init_std"],
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


@torch.no_grad()
def init_weights_normal(model: nn.Module, std: float) -> None:
    """Every weight matrix (embeddings, projections, lm_head) ~ N(0, std); biases 0, norms 1.

    Why explicit: transformers' own init also draws N(0, initializer_range) for Linear and
    Embedding weights, but zeroes the embedding row of the pad token; the study says every
    weight is N(0, std), so the pad row is drawn too. RMSNorm gains stay 1 and the q/k/v
    biases 0 (a random norm gain or bias is not part of "N(0, std) weights").
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif "RMSNorm" in type(module).__name__:
            nn.init.ones_(module.weight)


def build_model(model_cfg: dict, tokenizer) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2ForCausalLM (seed torch before calling for reproducibility)."""
    model = Qwen2ForCausalLM(model_config(model_cfg, tokenizer))
    init_weights_normal(model, model_cfg["init_std"])
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
