"""Gradient accumulation with 2 processes (gloo on CPU): SurgeryStep adds each micro-step's
task gradients weighted by this process's share of the task in that micro-step, and sums
over the processes once, at the optimizer step; the result is PCGrad (and the baseline) of
the global task gradients summed over the micro-steps, computed here independently."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_mtl_surgery import reference_projection

from ftlab.mtl.surgery import Baseline, PCGrad, SurgeryStep, WeightedAllReduce

SEED = 6
N_TASKS = 3
# [micro-step][process]: {task: (rows x [n, 4], targets y [n])}; task 2 appears in the second
# micro-step only, task 1 on one process only there. Targets pull w towards W0 + s_t D with
# opposite s_t for tasks 0 and 1, so their gradients conflict.
rng = np.random.default_rng(0)
W0, D = rng.normal(size=4), rng.normal(size=4)
PULL = {0: 1.0, 1: -1.0, 2: 0.3}


def _rows(n, t):
    x = rng.normal(size=(n, 4))
    return x, x @ (W0 + PULL[t] * D) + 0.1 * rng.normal(size=n)


CASE = [
    [{0: _rows(2, 0), 1: _rows(1, 1)}, {0: _rows(3, 0), 1: _rows(2, 1)}],
    [{0: _rows(1, 0), 1: _rows(2, 1), 2: _rows(2, 2)}, {0: _rows(2, 0), 2: _rows(1, 2)}],
]


def _loss(w, rows):
    x, y = (torch.tensor(a) for a in rows)
    return ((x @ w - y) ** 2).mean()


def _grad(w0, rows):
    w = torch.tensor(w0, requires_grad=True)
    _loss(w, rows).backward()
    return w.grad.numpy()


def _worker(rank, port, method, reduction, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor(W0))
    combiner = PCGrad(SEED, reduction) if method == "pcgrad" else Baseline(reduction)
    step = SurgeryStep([w], combiner, N_TASKS)
    for micro in CASE:
        tasks = sorted(set(micro[0]) | set(micro[1]))  # present on any process
        mine = micro[rank]
        losses = [_loss(w, mine[t]) if t in mine else None for t in tasks]
        weights = torch.tensor([len(mine[t][1]) if t in mine else 0 for t in tasks],
                               dtype=torch.float64)  # fmt: skip
        step.add(losses, tasks, data_parallel=WeightedAllReduce(weights))
        assert w.grad is None or method == "baseline"  # PCGrad: nothing before the end
    step.finish(data_parallel=WeightedAllReduce(torch.zeros(0)))
    out[rank] = w.grad.numpy().copy()
    dist.destroy_process_group()


def expected(method, reduction):
    """Global task gradient per micro-step: the row-weighted mean over the processes (a
    mean-squared loss over all the micro-step's rows of the task); summed over micro-steps;
    then projected once (orders drawn as PCGrad(SEED) draws them)."""
    g = np.zeros((N_TASKS, 4))
    for micro in CASE:
        for t in range(N_TASKS):
            parts = [m[t] for m in micro if t in m]
            if parts:
                rows = tuple(np.concatenate([p[i] for p in parts]) for i in (0, 1))
                g[t] += _grad(W0, rows)
    if method == "baseline":
        return g.sum(0) / (N_TASKS if reduction == "mean" else 1)
    gen = torch.Generator().manual_seed(SEED)
    orders = [torch.randperm(N_TASKS, generator=gen).tolist() for _ in range(N_TASKS)]
    projected = reference_projection(g, orders)
    return projected.mean(0) if reduction == "mean" else projected.sum(0)


@pytest.mark.parametrize(("method", "reduction"),
                         [("pcgrad", "sum"), ("pcgrad", "mean"), ("baseline", "mean")])  # fmt: skip
def test_two_processes_accumulate_then_combine_once(method, reduction):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, method, reduction, out), nprocs=2, join=True)
    want = expected(method, reduction)
    np.testing.assert_allclose(out[0], want, rtol=1e-10)
    np.testing.assert_array_equal(out[0], out[1])  # every process steps with the same gradient
    if method == "pcgrad":  # the case has conflicts, so the projection moved the sum
        assert np.abs(want - expected("baseline", reduction)).max() > 1e-3
