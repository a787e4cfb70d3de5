"""Data parallelism of the world-model trainer (torch DistributedDataParallel).

A launcher (ftlab.launch: accelerate launch / torchrun, srun across nodes) starts the processes
and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `World.from_env` joins
them (gloo on the CPU, nccl on GPUs). Without those variables the world is one process and
nothing here touches torch.distributed, so the single-process trainer is unchanged.

Same global batch, same result: every rank holds all training rows and computes the batch of
step s from the same per-epoch permutation (ftlab.train.Batches), then takes its contiguous
slice of those rows. The loss of a rank is the *sum* over its tokens divided by the token count
of the whole global batch (HF's `num_items_in_batch`), times the world size because DDP
averages gradients: the averaged gradient is then exactly the gradient of the 1-process mean
loss; only the order of floating-point additions differs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> World:
        """The launcher's world; joins the process group (once) when there are several."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        world = cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return world

    def device(self, device: torch.device) -> torch.device:
        """A GPU job's rank uses GPU LOCAL_RANK; the CPU stays the CPU."""
        if self.size > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def main_first(self, fn: Callable):
        """fn() on rank 0 (e.g. find the resume point, deleting stale state), its result
        (JSON-able / picklable) on every rank."""
        if self.size == 1:
            return fn()
        box = [fn() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Every rank is done. The process group lives on: the launched worker ends its process
        without Python's teardown (ftlab.launch._exit_now), where a gloo group can abort."""
        self.barrier()


def wrap(model, world: World, device: torch.device):
    """DDP around the model when there are several processes (the model itself otherwise).
    DDP broadcasts rank 0's weights at construction, so every rank starts identical."""
    if world.size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard_batch(batches, step: int, world: World) -> tuple[dict[str, torch.Tensor], int]:
    """This rank's rows of the batch of `step`, and the token count of the whole batch.

    The count is of predicted tokens (every real token after the first: the labels are shifted
    by one), as HF's mean loss divides by. A rank left without rows (a last batch of an epoch
    shorter than the world) gets one row with every label ignored: it contributes a zero
    loss and zero gradients, but still joins DDP's gradient all-reduce.
    """
    idx = batches.indices(step)
    n_tokens = int((batches.lengths[idx] - 1).sum())
    part = torch.tensor_split(idx, world.size)[world.rank]
    if len(part) == 0:
        batch = batches.collate(idx[:1])
        batch["labels"].fill_(-100)
        return batch, n_tokens
    return batches.collate(part), n_tokens


def train_step(
    net, optimizer, scheduler, batch: dict, n_tokens: int, world: World, max_grad_norm,
    *, amp, scaler=None,
) -> tuple[float, float]:  # fmt: skip
    """One data-parallel optimizer step; returns (loss of the global batch, lr used)."""
    from contextlib import nullcontext

    lr = scheduler.get_last_lr()[0]
    with amp() if amp is not None else nullcontext():
        loss = net(**batch, use_cache=False, num_items_in_batch=n_tokens).loss
    scaled = loss * world.size  # DDP averages the gradients over the ranks
    if scaler is None:
        scaled.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        optimizer.step()
    else:
        scaler.scale(scaled).backward()
        if max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    total = loss.detach().double()
    dist.all_reduce(total)  # sum of the ranks' parts = the global batch's mean loss
    return float(total), lr
