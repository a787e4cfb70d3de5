"""Where the small models run: device (auto | cpu | cuda) and numeric precision (fp32 | bf16 |
fp16 | bf16_weights), shared by training, evaluation and representation extraction.

- `resolve_device("auto")` is the least-used visible CUDA GPU (most free memory) when there
  is one, else the CPU; "cuda" fails loudly without a GPU; "cuda:N" picks a GPU.
- Precision is mixed precision: weights and optimizer state stay float32, the forward pass
  runs under `torch.autocast` in bf16/fp16; fp16 adds dynamic loss scaling (GradScaler), as
  the paper's fp16 mixed-precision training did. fp32 (the default) uses no autocast at all,
  so CPU results are exactly what they were before devices existed.
- bf16_weights (an option, not the paper's): a bfloat16 copy of the model runs the forward
  and backward passes with no autocast casts, and its gradients update float32 master weights
  and optimizer state, copied back to the bf16 copy after each step (bf16 training with fp32
  master weights, as in Megatron-LM); it takes the static step (ftlab.train_graph).
"""

from __future__ import annotations

import contextlib
import math

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16_weights")
MASTER_WEIGHTS = {"bf16_weights": torch.bfloat16}  # compute dtype of the master-weight modes
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """torch.device for a config value auto | cpu | cuda | cuda:N (None = auto)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", _freest_gpu())
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was asked for, but torch sees no CUDA GPU "
                f"(torch {torch.__version__}; use device: auto or cpu)"
            )
        if name == "cuda":
            return torch.device("cuda", _freest_gpu())
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)} (or cuda:N)")


def _freest_gpu() -> int:
    """Index of the visible GPU with the most free memory (jobs sharing a node spread out)."""
    n = torch.cuda.device_count()
    if n <= 1:
        return 0
    free = []
    for i in range(n):
        try:
            free.append(torch.cuda.mem_get_info(i)[0])
        except RuntimeError:  # a GPU we may not use (exclusive mode, busy): rank it last
            free.append(-1)
    return max(range(n), key=lambda i: free[i])


def check_precision(precision: str | None) -> str:
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def use_tf32(device: torch.device, enabled: bool) -> bool:
    """Let float32 matmuls on a CUDA device use TF32 tensor cores (10-bit mantissa inputs,
    float32 accumulation). Only an explicit `enabled` changes anything: the default keeps
    PyTorch's exact float32 (ieee), which is also what the paper's HF Trainer ran with (its
    `tf32` argument unset). Process-wide, like the torch setting. Returns whether TF32 is on
    for this device (never on the CPU, where the setting does nothing)."""
    if not enabled or device.type != "cuda":
        return False
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: mixing old and new APIs is an error
        matmul.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
    return True


def gpu_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def device_info(device: torch.device, precision: str) -> dict:
    """What ftlab_checkpoint.json records about where a model was trained."""
    return {"device": device.type, "precision": precision, "gpu_name": gpu_name(device)}


def autocast(device: torch.device, precision: str, *, graph_safe: bool = False):
    """Context for the forward pass: nothing for fp32, torch.autocast for bf16/fp16.

    graph_safe: disable autocast's weight-cast cache, as required inside CUDA graph capture
    (the cache would hold tensors of the capturing pass only).
    """
    if precision == "fp32" or precision in MASTER_WEIGHTS:  # the latter: weights already bf16
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[precision], cache_enabled=not graph_safe)


def launcher_mixed_precision(precision: str) -> str:
    """The launcher's --mixed_precision for a training precision: autocast modes pass through;
    fp32 and the master-weight modes (which cast the model themselves) are "no"."""
    return precision if precision in AMP_DTYPES else "no"


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """Dynamic loss scaling for fp16 (None otherwise)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def configure_threads(threads: int) -> None:
    torch.set_num_threads(max(1, int(threads)))


# -- evaluation batch size from free memory ---------------------------------------------------
def eval_batch_bytes_per_row(config, seq_len: int) -> int:
    """Rough upper bound of the GPU bytes one prompt row needs in greedy decoding (fp32):
    its KV cache over seq_len positions, the prefill activations of one layer at a time
    (hidden states, q/k/v, MLP, the attention scores) and the last-position logits."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads, vocab = config.num_attention_heads, config.vocab_size
    kv = 2 * layers * seq_len * h
    act = seq_len * (8 * h + 3 * f + 2 * heads * seq_len)
    return 4 * (kv + act + 2 * vocab)


def auto_eval_batch_size(
    model, device: torch.device, n_rows: int, seq_len: int, *, cpu_default: int = 64,
    cap: int = 8192, memory_fraction: float = 0.5,
) -> int:  # fmt: skip
    """Eval batch size for `eval.batch_size: auto`.

    CUDA: the largest power of two whose rows fit in memory_fraction of the GPU's free
    memory (jobs sharing the GPU each take a fraction of what is free when they start),
    capped by `cap` and by the number of rows. CPU: cpu_default.
    """
    if device.type != "cuda":
        return max(1, min(cpu_default, max(n_rows, 1)))
    free, _ = torch.cuda.mem_get_info(device)
    per_row = eval_batch_bytes_per_row(model.config, seq_len)
    fit = max(1, int(free * memory_fraction) // max(per_row, 1))
    size = 1 << int(math.log2(min(fit, cap)))
    rows = 1 << max(0, math.ceil(math.log2(max(n_rows, 1))))  # no point going past n_rows
    return max(1, min(size, rows))
