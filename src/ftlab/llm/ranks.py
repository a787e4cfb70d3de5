"""This process's place in a job that ftlab.launch started with several processes.

Evaluation and generation split their work by rank and meet at a few points (merging the rank
cache files, gathering counts); `Ranks` gives the rank, the world size and those collectives,
and is the single process (rank 0 of 1, no torch.distributed) otherwise. No heavy import at
module level: the teacher step uses it without lm-eval.
"""

from __future__ import annotations

import os
from datetime import timedelta

BARRIER_TIMEOUT = timedelta(days=7)


class Ranks:
    """This process's place in a launched job (torch.distributed, set up by accelerate), or
    the single process: rank, world size and the few collectives the cache needs."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world_size > 1:
            import torch
            from accelerate import PartialState

            # The same `cpu` flag the Trainer and HFLM's Accelerator use (gloo on CPU). A rank
            # may wait at a barrier while another generates a whole shard: a long timeout
            # (one failed rank ends the job anyway: the launcher stops the others).
            state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
            self.rank, self.world_size = state.process_index, state.num_processes
            self.device = state.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj, dst: int = 0) -> list | None:
        """[obj of rank 0, obj of rank 1, ...] on `dst`, None elsewhere."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def all_gather(self, tensor):
        """The ranks' tensors concatenated (a 0-d tensor counts as one element), on every rank."""
        if self.world_size == 1:
            return tensor
        import torch
        import torch.distributed as dist

        t = tensor.reshape(-1).contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def sum(self, value: float) -> float:
        """The sum of a number over all ranks, on every rank (added in rank order: the same
        float on every rank)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return sum(out)
