"""Schedule and eager optimizer step of the world-model trainer (ftlab.train), shared with the
multi-task trainer (ftlab.mtl.world_train)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def lr_multiplier(i: int, warmup: int, total: int) -> float:
    """LambdaLR factor for the optimizer step with index i (0-based): HF's
    get_linear_schedule_with_warmup, the paper's (HF Trainer, lr_scheduler_type "linear").

    Linear warmup i / warmup (so the first step has lr 0, as the paper's), the peak at step
    index `warmup`, then linear decay that reaches 0 at `total`.
    """
    if i < warmup:
        return i / max(1, warmup)
    return max(0.0, (total - i) / max(1, total - warmup))


def train_step(
    model, optimizer, scheduler, batch: dict, max_grad_norm: float | None,
    *, amp=nullcontext, scaler=None,
):  # fmt: skip
    """One eager optimizer step; returns (loss, lr used).

    amp: a factory of the forward pass's autocast context; scaler: the fp16 GradScaler.
    With the defaults (fp32) this is exactly the CPU step the exact-resume guarantee is about.
    """
    lr = scheduler.get_last_lr()[0]
    with amp():
        loss = model(**batch, use_cache=False).loss
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
    optimizer_update(model.parameters(), optimizer, scheduler, max_grad_norm, scaler)
    return loss.item(), lr


def optimizer_update(params, optimizer, scheduler, max_grad_norm, scaler=None) -> None:
    """After the backward pass: clip the gradients of params (when max_grad_norm; unscaled
    first with an fp16 scaler), step the optimizer (through the scaler) and the schedule, and
    clear the gradients. Shared by the eager step and the multi-task trainer."""
    if scaler is not None and max_grad_norm:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
