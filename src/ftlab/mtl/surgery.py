"""Gradient surgery: per-task losses -> one update, for any model and optimizer.

`surgery_backward(losses, params, combiner)` leaves in each `p.grad` the combined gradient of
the per-task losses (added to what is there, like `backward()`), so the caller then clips and
steps its own optimizer. Under gradient accumulation `SurgeryStep` does the same for one
optimizer step: `add` per micro-step sums each task's gradients, `finish` combines them once
(PCGrad of the step's task gradients, not a sum of per-micro-batch projections). A `Combiner`
is the method; two are here, and CAGrad or GradNorm would be a third subclass (they need the
same per-task gradients, plus their own state):

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
`reduction='sum'` also takes the mean, a bug not copied here); seed 000's verl copy
(verl/utils/mtl_utils/pcgrad.py, built as PCGrad(actor_optimizer)) uses it too, and adds 1e-16
to |g_j|^2 (not copied: it matters only for |g_j|^2 near 1e-16). The baseline's reduction is
set apart (config mtl.baseline_reduction, default sum: the plain summed loss, seed 000's
baseline, which trains without the MTL path); set both to mean for a pair that differs only by
the projection.
Randomness: the permutations come from the combiner's own seeded torch.Generator (the reference
uses Python's global `random`); its state is part of `state_dict()`, so a resumed run draws the
same orders. The conflict test is `torch.where` rather than an `if`, which avoids one host sync
per pair on a GPU and gives the same result (zero-norm gradients never project: their dot
product is 0), and a zero-norm g_j gets coefficient 0 (no clamping of |g_j|^2: a tiny but
positive |g_j|^2 projects exactly as the reference does).

Memory (benchmarks/pcgrad_step.py --memory prints the figures): PCGrad's output is a linear
combination of the ORIGINAL gradients, sum_k w_k g_k, so the projection runs on the T x T Gram
matrix (float64, on the host: no device sync per pair) and the gradients are read twice
(Gram, weighted sum). The per-task gradients live in ONE [T, P] buffer filled in place, "reached"
is one flag per task and parameter tensor, and the combined gradient goes straight into each
p.grad: peak extra memory about (T + 1) x the parameter bytes (the buffer, plus one task's
gradients while they are copied in; with SurgeryStep T is every task of the study, and the
buffer is held from the first micro-step to the optimizer step). The baseline never builds
per-task gradients: one backward of the (data parallel: weighted) summed loss, 1 x the
parameter bytes at most.
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
    def task_weights(self, gram: torch.Tensor) -> torch.Tensor:
        """gram [T, T] float64 (the original task gradients' dot products) -> w [T] float64:
        the combined gradient before the reduction is sum_k w_k g_k."""

    def combine(self, grads: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
        """grads [T, P] (one flattened gradient per task), reached [T, P] bool (the task's loss
        reaches that parameter) -> the combined gradient [P] (small inputs: tests, benchmarks;
        surgery_backward does the same per parameter tensor without the [P] copies)."""
        w = self.task_weights(gram_matrix(grads)).to(grads)
        merged = w @ grads
        if self.reduction == "mean":
            merged = torch.where(reached.all(0), merged / grads.shape[0], merged)
        return merged

    def state_dict(self) -> dict:
        """What a resumed run needs to continue identically (stateless combiners: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")


class Baseline(Combiner):
    """The plain sum of the task gradients: one backward pass of the summed loss (data
    parallel: of the weighted sum, then one all-reduce). With reduction "mean" the parameters
    every task reaches get the mean, the others the sum, as under PCGrad (for a model every
    task reaches entirely, the gradient of the mean loss); which tasks reach a parameter is
    read from the autograd graph, so no per-task gradient is built either."""

    name = "baseline"
    needs_task_gradients = False

    def task_weights(self, gram: torch.Tensor) -> torch.Tensor:
        return torch.ones(gram.shape[0], dtype=torch.float64)

    def reduced_loss(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(losses)).sum()


class PCGrad(Combiner):
    name = "pcgrad"

    def __init__(self, seed: int, reduction: str = "sum"):
        super().__init__(reduction)
        self.generator = torch.Generator().manual_seed(int(seed))

    def coefficients(self, gram: torch.Tensor) -> torch.Tensor:
        """C [T, T] float64 with projected g_i = sum_k C[i, k] g_k: Algorithm 1 on the Gram
        matrix (g_i . g_j = C[i] . gram[:, j]; projecting onto g_j's normal plane subtracts
        (g_i . g_j) / |g_j|^2 from C[i, j]); the orders are drawn as before, i = 0..T-1."""
        gram = gram.to(torch.float64).cpu()
        n = gram.shape[0]
        sq = gram.diagonal()
        coef = torch.eye(n, dtype=torch.float64)
        for i in range(n):
            row = coef[i]
            for j in torch.randperm(n, generator=self.generator).tolist():
                dot = torch.dot(row, gram[:, j])
                row[j] -= torch.where(dot < 0, dot / torch.where(sq[j] > 0, sq[j], 1.0), 0.0)
        return coef

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """The projected gradients [T, P] (before the reduction)."""
        return self.coefficients(gram_matrix(grads)).to(grads) @ grads

    def task_weights(self, gram: torch.Tensor) -> torch.Tensor:
        return self.coefficients(gram).sum(0)

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


CHUNK = 1 << 22  # elements per column block of the [T, P] buffer in the Gram / weighted sum


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gram_matrix(grads: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
    """grads [T, P] (rows: only those rows, in that order) -> [T, T] float64 on the host, block
    by block (float32 blocks for half or float32 gradients, as torch.dot accumulates them,
    summed in float64)."""
    n, size = grads.shape if rows is None else (len(rows), grads.shape[1])
    acc = _acc_dtype(grads.dtype)
    gram = torch.zeros(n, n, dtype=torch.float64, device=grads.device)
    for a in range(0, size, CHUNK):
        block = grads[:, a : a + CHUNK] if rows is None else grads[rows, a : a + CHUNK]
        block = block.to(acc)
        gram += (block @ block.T).to(torch.float64)
    return gram.cpu()


def task_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grads [T, P], reached [T, len(params)]): each loss's flattened gradient w.r.t. params
    written into one preallocated buffer (one backward per task, the graph kept until the
    last), zeros where it does not reach; reached: the task's loss reaches the parameter
    tensor. A None loss (a task absent from this process's batch, data parallel) reaches
    nothing."""
    params = list(params)
    grads = _task_buffer(len(losses), params)
    reached = torch.zeros(len(losses), len(params), dtype=torch.bool)
    _add_task_gradients(losses, params, grads, reached, range(len(losses)), [1.0] * len(losses))
    return grads, reached


def _task_buffer(n_tasks: int, params: list[torch.Tensor]) -> torch.Tensor:
    ref = params[0]
    size = sum(p.numel() for p in params)
    return torch.zeros(n_tasks, size, dtype=ref.dtype, device=ref.device)


def _add_task_gradients(losses, params, grads, reached, rows, coef) -> None:
    """grads[rows[k]] += coef[k] * (losses[k]'s flattened gradient), reached[rows[k]] |= the
    tensors it reaches; the per-tensor gradients are freed as they are copied in (at most one
    task's gradients beside the buffer)."""
    last = max((k for k, loss in enumerate(losses) if loss is not None), default=-1)
    for k, loss in enumerate(losses):
        if loss is None:
            continue
        gs = list(torch.autograd.grad(loss, params, retain_graph=k < last, allow_unused=True))
        row, offset = rows[k], 0
        for n, p in enumerate(params):
            if gs[n] is not None:
                grads[row, offset : offset + p.numel()].add_(gs[n].reshape(-1), alpha=coef[k])
                reached[row, n] = True
                gs[n] = None
            offset += p.numel()


def graph_reaches(losses: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]):
    """reached [T, len(params)] bool from the autograd graphs (no gradient computed): the
    parameters whose AccumulateGrad node a loss's graph contains - exactly those for which
    torch.autograd.grad(loss, params, allow_unused=True) returns a tensor, not None."""
    index = {id(p): n for n, p in enumerate(params)}
    reached = torch.zeros(len(losses), len(params), dtype=torch.bool)
    for k, loss in enumerate(losses):
        if loss is None or loss.grad_fn is None:
            continue
        seen, stack = set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)
            if var is not None and id(var) in index:
                reached[k, index[id(var)]] = True
            stack.extend(fn for fn, _ in node.next_functions)
    return reached


def conflict_stats(grads: torch.Tensor | None = None, *, gram=None) -> SurgeryStats:
    """Pairs of task gradients with a negative dot product, and the smallest cosine."""
    gram = gram_matrix(grads) if gram is None else gram
    n = gram.shape[0]
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    cos = gram / norms[:, None] / norms[None, :]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    n_conflicts = int((gram[upper] < 0).sum()) if n > 1 else 0
    min_cos = float(cos[upper].min()) if n > 1 else None
    return SurgeryStats(n, n_conflicts, min_cos)


class WeightedAllReduce:
    """Data parallel: the global task gradient g_t = sum_p w_pt g_pt / sum_p w_pt, with w_pt
    this process's weight of task t in the micro-step (its tokens for a mean-token loss, 1 for
    GRPO's globally normalized loss; ftlab.mtl.trl), and reached = reached on any process."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def coefficients(self, device) -> list[float]:
        """w_pt / sum_p w_pt for this process (one all-reduce of T numbers)."""
        w = self.weights.to(device=device, dtype=torch.float64)
        total = w.clone()
        torch.distributed.all_reduce(total)
        return (w / total.clamp_min(1e-30)).tolist()

    def reached(self, reached: torch.Tensor, device) -> torch.Tensor:
        flags = reached.to(device=device, dtype=torch.uint8)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return flags.bool().cpu()

    def gradient(self, grad: torch.Tensor) -> None:
        """Sum over the processes, in place (the [T, P] task gradients or one gradient)."""
        torch.distributed.all_reduce(grad)


def _accumulate(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g if g.dtype == p.dtype else g.to(p.dtype)
    else:
        p.grad += g


def _add_weighted(params, grads: torch.Tensor, w: list[float], shared: list[bool], n_tasks):
    """p.grad += sum_k w_k grads[k, p's columns] (/ T where shared), block by block."""
    acc = _acc_dtype(grads.dtype)
    offset = 0
    for n, p in enumerate(params):
        out = torch.empty(p.numel(), dtype=p.dtype, device=p.device)
        for a in range(0, p.numel(), CHUNK):
            cols = slice(offset + a, offset + min(a + CHUNK, p.numel()))
            block = torch.zeros(cols.stop - cols.start, dtype=acc, device=grads.device)
            for k, wk in enumerate(w):
                if wk != 0.0:
                    block.add_(grads[k, cols], alpha=wk)
            if shared[n]:
                block /= n_tasks
            out[a : a + block.numel()] = block
        offset += p.numel()
        _accumulate(p, out.view_as(p))


class SurgeryStep:
    """The surgery of one optimizer step, over its gradient-accumulation micro-steps.

    PCGrad projects the step's task gradients once (the paper's Algorithm 1 per update; seed
    000 calls pc_backward once per update): the projection is not linear, so projecting each
    micro-batch's gradients and summing is not PCGrad of the step. `add` (each micro-step)
    adds each task's gradient into row t of one [n_tasks, P] buffer (data parallel: times
    this process's share of the task in that micro-step, so that one sum over the processes at
    the end gives the global gradients); `finish` (the last micro-step) all-reduces the buffer
    once, projects the tasks present in the step, and adds the result to p.grad. With one
    micro-step this is the former per-call computation.

    The baseline is linear: each micro-step's backward goes into p.grad; data parallel, p.grad
    is summed over the processes once in `finish`, and reduction "mean" divides the tensors
    every task of the step reaches by the step's task count there; for those two, gradients
    already in p.grad when the step starts are set aside and added back after (so finish
    rewrites only the step's own gradient, as backward() would add).
    """

    def __init__(self, params: Sequence[torch.Tensor], combiner: Combiner, n_tasks: int):
        self.params = list(params)
        self.combiner = combiner
        self.n_tasks = n_tasks
        self.present = [False] * n_tasks  # tasks with a (maybe None) loss in any micro-step
        self.reached = torch.zeros(n_tasks, len(self.params), dtype=torch.bool)
        self.grads: torch.Tensor | None = None  # [n_tasks, P] (PCGrad), allocated at first add
        self.aside: list | None = None  # baseline: p.grad from before the step
        self.micro_steps = 0

    def add(self, losses: Sequence[torch.Tensor | None], tasks: Sequence[int] | None = None,
            data_parallel: WeightedAllReduce | None = None) -> None:  # fmt: skip
        """One micro-step's losses; tasks: the task index of each (default 0..len-1). A None
        loss: a task with no rows on this process (data parallel), present on another."""
        tasks = list(range(len(losses))) if tasks is None else [int(t) for t in tasks]
        if len(tasks) != len(losses) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {tasks} must name each of the {len(losses)} losses once")
        if any(not 0 <= t < self.n_tasks for t in tasks):
            raise ValueError(f"task indices {tasks} outside 0..{self.n_tasks - 1}")
        for t in tasks:
            self.present[t] = True
        device = self.params[0].device
        if data_parallel is None:
            coef = [1.0] * len(losses)
        else:
            coef = data_parallel.coefficients(device)
        if self.combiner.needs_task_gradients:
            if self.grads is None:
                self.grads = _task_buffer(self.n_tasks, self.params)
            _add_task_gradients(losses, self.params, self.grads, self.reached, tasks, coef)
        else:
            self._baseline_add(losses, tasks, coef, data_parallel is not None)
        self.micro_steps += 1

    def _baseline_add(self, losses, tasks, coef, data_parallel: bool) -> None:
        present = [(k, loss) for k, loss in enumerate(losses) if loss is not None]
        if not data_parallel and self.combiner.reduction == "sum":
            self.combiner.reduced_loss([loss for _, loss in present]).backward()
            return
        if self.aside is None:
            self.aside = [p.grad for p in self.params]
            for p in self.params:
                p.grad = None
        if self.combiner.reduction == "mean":
            reached = graph_reaches(losses, self.params)
            for k, t in enumerate(tasks):
                self.reached[t] |= reached[k]
        if present:
            total = torch.stack([loss * coef[k] for k, loss in present]).sum()
            grads = list(torch.autograd.grad(total, self.params, allow_unused=True))
            for n, p in enumerate(self.params):
                if grads[n] is not None:
                    _accumulate(p, grads[n])
                    grads[n] = None

    def finish(self, *, stats: bool = False,
               data_parallel: WeightedAllReduce | None = None) -> SurgeryStats | None:  # fmt: skip
        """Add the step's combined gradient to p.grad (data_parallel: the collectives, any
        micro-step's object); stats: the conflicts of the step's task gradients."""
        if self.micro_steps == 0:
            raise ValueError("SurgeryStep.finish before any micro-step was added")
        rows = [t for t in range(self.n_tasks) if self.present[t]]
        mean = self.combiner.reduction == "mean"
        device = self.params[0].device
        if not self.combiner.needs_task_gradients:
            self._baseline_finish(rows, mean, data_parallel, device)
            return SurgeryStats(len(rows), 0, None) if stats else None
        grads, reached = self.grads, self.reached
        self.grads = None
        if data_parallel is not None:
            data_parallel.gradient(grads)
            reached = data_parallel.reached(reached, device)
        gram = gram_matrix(grads, rows if len(rows) < self.n_tasks else None)
        w = [0.0] * self.n_tasks
        for t, wt in zip(rows, self.combiner.task_weights(gram).tolist(), strict=True):
            w[t] = wt
        shared = reached[rows].all(0).tolist() if mean else [False] * len(self.params)
        _add_weighted(self.params, grads, w, shared, len(rows))
        del grads
        return conflict_stats(gram=gram) if stats else None

    def _baseline_finish(self, rows, mean: bool, data_parallel, device) -> None:
        if self.aside is None:  # the plain sum went straight into p.grad
            return
        shared = [False] * len(self.params)
        if mean:
            reached = self.reached
            if data_parallel is not None:
                reached = data_parallel.reached(reached, device)
            shared = reached[rows].all(0).tolist()
        for n, p in enumerate(self.params):
            g = torch.zeros_like(p) if p.grad is None else p.grad
            if data_parallel is not None:
                data_parallel.gradient(g)
            if shared[n]:
                g /= len(rows)
            before, self.aside[n] = self.aside[n], None
            p.grad = None
            if before is not None:
                _accumulate(p, before)
            _accumulate(p, g)


def surgery_backward(
    losses: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    combiner: Combiner,
    *,
    stats: bool = False,
    data_parallel: WeightedAllReduce | None = None,
) -> SurgeryStats | None:
    """Add the combined gradient of `losses` (one scalar per task) to each param's .grad: an
    optimizer step of one micro-step (SurgeryStep; with gradient accumulation, use that).

    params: the parameters the optimizer updates (those with requires_grad). stats: also
    return the conflict statistics of the original task gradients (the baseline: none
    computed, n_conflicts 0). data_parallel: the cross-process reduction (WeightedAllReduce):
    PCGrad all-reduces the [T, P] task gradients, so every process projects the same global
    gradients; the baseline all-reduces its one gradient. A None loss: a task with no rows
    here (its gradient is zero, reached nothing).
    """
    if not losses:
        raise ValueError("surgery_backward needs at least one task loss")
    step = SurgeryStep(params, combiner, len(losses))
    step.add(losses, data_parallel=data_parallel)
    return step.finish(stats=stats, data_parallel=data_parallel)
