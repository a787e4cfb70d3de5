"""The batch size of lm-eval `generate_until` on a GPU, from the size of the KV cache.

lm-eval's HFLM finds a generation batch size by running full forward passes at the model's
maximum length with full-vocabulary log-softmax (`_detect_batch_size`), halving on each
out-of-memory: on one H200 and a Qwen3-1.7B-shaped model that took 48.9 s and settled on 63
(benchmarks/measured/h200-2026-11-27/llm.log), bounded by logits that generation never holds
(HF `generate` keeps the last position's logits only). What a generating row does hold is
its KV cache over prompt + new tokens; `generation_batch_size` divides half of the GPU's free
memory by that (plus one layer's prefill activations and the last logits, generously), so
IFEval's 541 long generations run in two or three large batches instead of nine of 63.
"""

from __future__ import annotations

from typing import Any

# Half the free memory: HF's dynamic KV cache grows by concatenation, one new tensor per layer
# and token, and the allocator keeps the freed smaller blocks beside the new ones.
DEFAULT_MEMORY_SHARE = 0.5


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Bytes of keys and values one token keeps in every layer's cache."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def row_bytes(config: Any, dtype_bytes: int, context_tokens: int, max_new_tokens: int) -> int:
    """Peak bytes one generating row adds: its KV cache at full length, one layer's prefill
    activations over its prompt (hidden states, q/k/v/o, the MLP's three projections, eager
    attention scores as an upper bound) and its last logits in float32 (a few copies: the
    processors and the argmax)."""
    tokens = context_tokens + max_new_tokens
    inter = getattr(config, "intermediate_size", 4 * config.hidden_size)
    act = context_tokens * (4 * config.hidden_size + 3 * inter) * dtype_bytes
    scores = config.num_attention_heads * context_tokens**2 * dtype_bytes
    logits = 3 * config.vocab_size * 4
    return kv_bytes_per_token(config, dtype_bytes) * tokens + act + scores + logits


def generation_batch_size(
    config: Any,
    dtype_bytes: int,
    context_tokens: int,
    max_new_tokens: int,
    free_bytes: int,
    n_requests: int,
    memory_share: float = DEFAULT_MEMORY_SHARE,
) -> int:
    """Rows generated at once: as many as `memory_share` of `free_bytes` holds, at most
    `n_requests` (a larger batch only pads), at least 1."""
    per_row = row_bytes(config, dtype_bytes, context_tokens, max_new_tokens)
    fits = int(free_bytes * memory_share) // per_row
    return max(1, min(int(n_requests), fits))


def free_gpu_bytes(device: Any) -> int:
    """Free bytes on a CUDA device, counting what PyTorch reserved but does not use."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def hflm_generation_batch(lm: Any, requests: list, memory_share: float = DEFAULT_MEMORY_SHARE):
    """The estimate for an lm-eval HFLM on a CUDA device and `requests` (generate_until
    Instances, the longest first), or None where it does not apply (CPU, another backend):
    the caller then keeps lm-eval's own detection."""
    import torch

    model = getattr(lm, "model", None)
    device = torch.device(getattr(lm, "device", "cpu"))
    if device.type != "cuda" or model is None or not hasattr(model, "config"):
        return None
    params = next(model.parameters(), None)
    if params is None:
        return None
    gen_kwargs = requests[0].args[1] if len(requests[0].args) > 1 else {}
    max_new = int((gen_kwargs or {}).get("max_gen_toks", getattr(lm, "max_gen_toks", 256)))
    max_length = int(getattr(lm, "max_length", 2048))
    # HFLM keeps the last max_length - max_gen_toks prompt tokens (left truncation)
    longest = max(len(lm.tok_encode(r.args[0])) for r in requests[:8])
    context = min(longest, max(1, max_length - max_new))
    return generation_batch_size(
        model.config,
        params.element_size(),
        context,
        max_new,
        free_gpu_bytes(device),
        len(requests),
        memory_share,
    )
