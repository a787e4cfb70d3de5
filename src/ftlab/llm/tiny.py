"""A tiny randomly initialised causal LM + character tokenizer, loadable through Auto* classes.

Used by the tests and the CPU demo of the LLM study in place of Qwen3-1.7B: it has the same
file layout, so SFT/GRPO/teacher code and lm-eval's HFLM load it from a path like a real model.

Tokenizer: ftlab.tokenizer's character vocabulary (ids 0..97 unchanged) plus space (98) and
newline (99), which the LLM datasets need. It is a variant written here rather than a change to
ftlab.tokenizer because covering newline needs a different pre-tokenizer regex, which would
change the bytes (and content hashes) of every existing world-model checkpoint.

Why Qwen3 and not Qwen2: transformers 5 force-rebuilds the tokenizer of any "qwen2" checkpoint
as Qwen2Tokenizer (byte-level BPE; see ftlab.tokenizer), and that rebuild silently drops spaces
and newlines of this vocabulary (checked: "What is 3" -> "Whatis3"). For model type "qwen3" (the
study's model family) AutoTokenizer loads tokenizer.json as saved (TokenizersBackend), so ids
and decodings are exactly ours, and unknown characters map to <unk> instead of vanishing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from ftlab.tokenizer import (  # noqa: F401 (re-exported)
    BOS,
    CHARS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    char_level_tokenizer,
    char_vocab,
)

EXTRA_CHARS = (" ", "\n")
TINY_CHARS = CHARS + EXTRA_CHARS


def tiny_vocab() -> dict[str, int]:
    return char_vocab(TINY_CHARS)


def build_tiny_tokenizer(model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """One token per character (printable ASCII, space, newline); <bos> prepended, no <eos>."""
    # "[\s\S]" rather than ".": Oniguruma's "." does not match newline.
    return char_level_tokenizer(
        tiny_vocab(),
        r"[\s\S]",
        model_max_length=model_max_length,
        # The default cleanup would turn "7 ," into "7," when decoding.
        clean_up_tokenization_spaces=False,
    )


def build_tiny_causal_lm(
    out_dir: str | Path,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    max_length: int = 1024,
) -> str:
    """Write a random Qwen3ForCausalLM + tokenizer to out_dir; returns out_dir as str."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    tokenizer = build_tiny_tokenizer(model_max_length=max_length)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,  # Qwen3Config defaults to 128 regardless of hidden size
        max_position_embeddings=max_length,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
