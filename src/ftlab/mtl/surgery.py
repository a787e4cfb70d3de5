"""Gradient surgery: per-task losses -> one update, for any model and optimizer.

`surgery_backward(losses, params, combiner)` leaves in each `p.grad` the combined gradient of
the per-task losses (added to what is there, like `backward()`), so the caller then clips and
steps its own optimizer. A `Combiner` is the method; two are here, and CAGrad or GradNorm would
be a third subclass (they need the same per-task gradients, plus their own state):

- `Baseline`: the plain sum of the task losses, one backward pass.
- `PCGrad` (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1): per-task
  gradients g_1..g_T; each g_i is projected onto the normal plane of every g_j it conflicts
  with (g_i . g_j < 0): g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j, visiting the j in a random
  order; the projected gradients are summed.

Details follow the PyTorch reference (WeiChengTseng/Pytorch-PCGrad, pcgrad.py,
`_project_conflicting`), which the paper's authors link:
- g_i is projected against the ORIGINAL gradients g_j, never against already-projected ones,
  and the dot product uses the running (partly projected) g_i;
- the order is a fresh uniform permutation of ALL tasks for every i, g_i's own original
  included (as the reference and the authors' TF code do: it matters only when the projected
  g_i has turned against its own original);
- parameters that a task's loss does not reach get a zero gradient for that task.
Reduction (option `reduction`): "sum" (default) is the paper's Algorithm 1 and the authors'
TF code (tianheyu927/PCGrad, PCGrad_tf.py). "mean" is the PyTorch reference's default: the
mean over tasks for parameters every task reaches, the sum for the others (that code's
`reduction='sum'` also takes the mean, a bug not copied here). The baseline uses the same
reduction, so the two methods differ only by the projection.
Randomness: the permutations come from the combiner's own seeded torch.Generator (the reference
uses Python's global `random`); its state is part of `state_dict()`, so a resumed run draws the
same orders. The conflict test is `torch.where` rather than an `if`, which avoids one host sync
per pair on a GPU and gives the same result (zero-norm gradients never project: their dot
product is 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class SurgeryStats:
    """What one combined step looked like (logged per step by the trainers)."""

    n_tasks: int
    n_conflicts: int  # unordered task pairs whose ORIGINAL gradients have a negative dot product
    min_cosine: float | None  # the most conflicting pair's cosine (None: not computed)


class Combiner(ABC):
    """Turns per-task losses into one gradient. Subclasses: Baseline, PCGrad (CAGrad, ...)."""

    name: str
    needs_task_gradients: bool = True

    def __init__(self, reduction: str = "sum"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
        self.reduction = reduction

    @abstractmethod
    def combine(self, grads: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
        """grads [T, P] (one flattened gradient per task), reached [T, P] bool (the task's loss
        reaches that parameter) -> the combined gradient [P]."""

    def reduce(self, grads: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
        if self.reduction == "sum":
            return grads.sum(0)
        shared = reached.all(0)
        return torch.where(shared, grads.mean(0), grads.sum(0))

    def state_dict(self) -> dict:
        """What a resumed run needs to continue identically (stateless combiners: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")


class Baseline(Combiner):
    """The plain sum of the task gradients: one backward pass of the summed loss. With
    reduction "mean" it takes the per-task gradients, so that task-specific parameters get
    the same sum as under PCGrad (for a model every task reaches entirely, the result is
    the gradient of the mean loss)."""

    name = "baseline"

    @property
    def needs_task_gradients(self) -> bool:
        return self.reduction == "mean"

    def combine(self, grads: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
        return self.reduce(grads, reached)

    def reduced_loss(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(losses)).sum()


class PCGrad(Combiner):
    name = "pcgrad"

    def __init__(self, seed: int, reduction: str = "sum"):
        super().__init__(reduction)
        self.generator = torch.Generator().manual_seed(int(seed))

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """The projected gradients [T, P] (before the reduction)."""
        n = grads.shape[0]
        sq_norms = (grads * grads).sum(1)
        out = grads.clone()
        for i in range(n):
            g = out[i]
            for j in torch.randperm(n, generator=self.generator).tolist():
                dot = torch.dot(g, grads[j])
                coef = torch.where(dot < 0, dot / sq_norms[j].clamp_min(1e-30), 0.0)
                g -= coef * grads[j]
        return out

    def combine(self, grads: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.project(grads), reached)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


METHODS = {"baseline": Baseline, "pcgrad": PCGrad}


def make_combiner(method: str, *, seed: int, reduction: str = "sum") -> Combiner:
    """The combiner of a method name (config key `mtl.methods`)."""
    if method == "baseline":
        return Baseline(reduction)
    if method == "pcgrad":
        return PCGrad(seed, reduction)
    raise ValueError(f"unknown multi-task method {method!r}; known: {', '.join(METHODS)}")


def task_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grads [T, P], reached [T, P]): each loss's flattened gradient w.r.t. params (one
    backward per task, the graph kept until the last), zeros where it does not reach. A None
    loss (a task absent from this process's batch, data parallel) reaches nothing."""
    flat, reached = [], []
    last = max((k for k, loss in enumerate(losses) if loss is not None), default=-1)
    for k, loss in enumerate(losses):
        if loss is None:
            gs = [None] * len(params)
        else:
            gs = torch.autograd.grad(loss, params, retain_graph=k < last, allow_unused=True)
        flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               for p, g in zip(params, gs, strict=True)]))  # fmt: skip
        reached.append(torch.cat([torch.full((p.numel(),), g is not None, device=p.device)
                                  for p, g in zip(params, gs, strict=True)]))  # fmt: skip
    return torch.stack(flat), torch.stack(reached)


def conflict_stats(grads: torch.Tensor) -> SurgeryStats:
    """Pairs of task gradients with a negative dot product, and the smallest cosine."""
    n = grads.shape[0]
    gram = grads @ grads.T
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    cos = gram / norms[:, None] / norms[None, :]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=grads.device), diagonal=1)
    n_conflicts = int((gram[upper] < 0).sum()) if n > 1 else 0
    min_cos = float(cos[upper].min()) if n > 1 else None
    return SurgeryStats(n, n_conflicts, min_cos)


def surgery_backward(
    losses: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    combiner: Combiner,
    *,
    stats: bool = False,
    reduce_grads=None,
) -> SurgeryStats | None:
    """Add the combined gradient of `losses` (one scalar per task) to each param's .grad.

    params: the parameters the optimizer updates (those with requires_grad). stats: also
    return the conflict statistics of the original task gradients (costs a T x T Gram matrix).
    reduce_grads: (grads, reached) -> (grads, reached), applied to the [T, P] task gradients
    before combining (data parallel: an all-reduce, so every process projects the same global
    gradients). A None loss: a task with no rows here (its gradient is zero, reached nothing).
    """
    params = list(params)
    if not losses:
        raise ValueError("surgery_backward needs at least one task loss")
    if not combiner.needs_task_gradients and reduce_grads is None:
        combiner.reduced_loss([loss for loss in losses if loss is not None]).backward()
        return SurgeryStats(len(losses), 0, None) if stats else None
    grads, reached = task_gradients(losses, params)
    if reduce_grads is not None:
        grads, reached = reduce_grads(grads, reached)
    merged = combiner.combine(grads, reached)
    offset = 0
    for p in params:
        g = merged[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad += g
    return conflict_stats(grads) if stats else None
