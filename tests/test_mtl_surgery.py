"""PCGrad and the baseline against independent computations on hand-made gradients."""

import itertools

import numpy as np
import pytest
import torch

from ftlab.mtl.surgery import (
    Baseline,
    PCGrad,
    conflict_stats,
    graph_reaches,
    make_combiner,
    surgery_backward,
    task_gradients,
)


def reference_projection(grads: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    """Algorithm 1 in float64, written from the paper / WeiChengTseng's loop: g_i projected
    against the ORIGINAL g_j, visited in orders[i]."""
    out = grads.astype(np.float64).copy()
    for i, order in enumerate(orders):
        for j in order:
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] = out[i] - dot * grads[j] / (grads[j] @ grads[j])
    return out


def test_conflicting_pair_is_projected_exactly():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    projected = PCGrad(seed=0).project(g)
    # by hand: g1 - (g1.g2)/|g2|^2 g2 = (1,0) + 1/2 (-1,1); g2 - (g2.g1)/|g1|^2 g1 = (0,1)
    torch.testing.assert_close(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=g.dtype))
    assert float(projected[0] @ g[1]) == 0.0 and float(projected[1] @ g[0]) == 0.0
    merged = PCGrad(seed=0).combine(g, torch.ones_like(g, dtype=torch.bool))
    torch.testing.assert_close(merged, torch.tensor([0.5, 1.5], dtype=g.dtype))


def test_non_conflicting_gradients_give_the_baseline_step():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0], [2.0, 1.0, 1.0]])
    reached = torch.ones_like(g, dtype=torch.bool)
    for reduction in ("sum", "mean"):
        pc = PCGrad(seed=3, reduction=reduction).combine(g, reached)
        base = Baseline(reduction).combine(g, reached)
        assert torch.equal(pc, base)
    assert torch.equal(Baseline("sum").combine(g, reached), g.sum(0))


def test_three_tasks_match_the_reference_for_the_drawn_orders():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 6))
    grads[1] = -grads[0] + 0.3 * rng.normal(size=6)  # make conflicts certain
    g = torch.tensor(grads)
    gen = torch.Generator().manual_seed(11)  # the same stream PCGrad(seed=11) draws from
    orders = [torch.randperm(3, generator=gen).tolist() for _ in range(3)]
    got = PCGrad(seed=11).project(g).numpy()
    np.testing.assert_allclose(got, reference_projection(grads, orders), rtol=1e-12, atol=1e-12)


def test_order_matters_and_is_seeded():
    # three pairwise-conflicting gradients: the result depends on the visiting order
    grads = np.array([[1.0, 0.0], [-0.9, 0.6], [-0.4, -1.0]])
    g = torch.tensor(grads)
    outcomes = {
        tuple(np.round(reference_projection(grads, [list(p), list(q), list(r)]).sum(0), 9))
        for p, q, r in itertools.product(itertools.permutations(range(3)), repeat=3)
    }
    assert len(outcomes) > 1  # the order is not a no-op here
    draws = [tuple(np.round(PCGrad(seed=s).combine(g, g != 0).numpy(), 9)) for s in range(20)]
    assert set(draws) <= outcomes and len(set(draws)) > 1
    again = [tuple(np.round(PCGrad(seed=s).combine(g, g != 0).numpy(), 9)) for s in range(20)]
    assert draws == again  # same seed, same orders


def test_state_dict_resumes_the_order_stream():
    g = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = PCGrad(seed=5)
    a.project(g)
    state = a.state_dict()
    expected = a.project(g)
    b = PCGrad(seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.project(g), expected)


def _linear_losses(w, xs, ys):
    return [((x @ w - y) ** 2).mean() for x, y in zip(xs, ys, strict=True)]


def test_surgery_backward_on_a_model_equals_the_analytic_computation():
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(8, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    ys = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(3)]
    w0 = torch.randn(4, generator=gen, dtype=torch.float64)
    # analytic per-task gradients of mean squared error: 2/n X^T (Xw - y)
    analytic = np.stack(
        [
            2 / 8 * x.numpy().T @ (x.numpy() @ w0.numpy() - y.numpy())
            for x, y in zip(xs, ys, strict=True)
        ]
    )
    w = torch.nn.Parameter(w0.clone())
    grads, reached = task_gradients(_linear_losses(w, xs, ys), [w])
    np.testing.assert_allclose(grads.numpy(), analytic, rtol=1e-12)
    assert reached.all()

    gen_orders = torch.Generator().manual_seed(7)
    orders = [torch.randperm(3, generator=gen_orders).tolist() for _ in range(3)]
    expected = reference_projection(analytic, orders).sum(0)
    surgery_backward(_linear_losses(w, xs, ys), [w], PCGrad(seed=7))
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-10)

    # an optimizer steps with exactly that gradient
    opt = torch.optim.SGD([w], lr=0.1)
    opt.step()
    np.testing.assert_allclose(w.detach().numpy(), w0.numpy() - 0.1 * expected, rtol=1e-10)

    # the baseline: one backward of the summed loss = the sum of the task gradients
    w.grad = None
    with torch.no_grad():
        w.copy_(w0)
    surgery_backward(_linear_losses(w, xs, ys), [w], Baseline())
    np.testing.assert_allclose(w.grad.numpy(), analytic.sum(0), rtol=1e-10)


def test_mean_reduction_sums_task_specific_parameters():
    shared = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    head_a = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    head_b = torch.nn.Parameter(torch.tensor([-1.5], dtype=torch.float64))
    params = [shared, head_a, head_b]

    def losses():
        return [(shared.sum() * head_a).sum() ** 2, (shared[0] - head_b).sum() ** 2]

    grads, reached = task_gradients(losses(), params)
    assert reached.tolist() == [[True, True, False], [True, False, True]]  # per tensor
    assert graph_reaches(losses(), params).tolist() == reached.tolist()
    surgery_backward(losses(), params, make_combiner("baseline", seed=0, reduction="mean"))
    g = grads.numpy()
    np.testing.assert_allclose(shared.grad.numpy(), g[:, :2].mean(0))  # shared: mean
    np.testing.assert_allclose(head_a.grad.numpy(), g[:, 2].sum(0, keepdims=True))  # own: sum
    np.testing.assert_allclose(head_b.grad.numpy(), g[:, 3].sum(0, keepdims=True))


def test_gradients_accumulate_like_backward():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    w.grad = torch.tensor([10.0, 10.0])
    surgery_backward([w.sum(), (2 * w).sum()], [w], PCGrad(seed=0))
    assert w.grad.tolist() == [13.0, 13.0]


def test_conflict_stats_and_errors():
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    stats = conflict_stats(g)
    assert stats.n_conflicts == 1 and stats.min_cosine == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unknown multi-task method 'cagrad'"):
        make_combiner("cagrad", seed=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        PCGrad(seed=0, reduction="max")
    with pytest.raises(ValueError, match="at least one task loss"):
        surgery_backward([], [], Baseline())


def test_config_method_names_are_the_implemented_combiners():
    import subprocess
    import sys
    from pathlib import Path

    from ftlab.mtl import study, surgery

    assert tuple(surgery.METHODS) == study.METHODS
    # loading any config imports every kind's module: none of that may import torch
    config = Path(__file__).parent / "config_mtl_tiny.yaml"
    code = (
        "import sys; from ftlab.config import load_config; from ftlab.kinds import matrix_of; "
        f"matrix_of(load_config({str(config)!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def old_project(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The implementation before the Gram-matrix rewrite (commit d4e9563), kept as a second
    reference: running g_i, projected in place against the original rows (zero-norm rows are
    never projected on, as the reference's `if dot < 0`)."""
    n = grads.shape[0]
    sq = (grads * grads).sum(1)
    out = grads.clone()
    for i in range(n):
        for j in torch.randperm(n, generator=generator).tolist():
            dot = torch.dot(out[i], grads[j])
            if dot < 0 and sq[j] > 0:
                out[i] -= dot / sq[j] * grads[j]
    return out


def random_case(rng, trial):
    """Random [T, P] gradients, some with task-specific parameter tensors (a head only one
    task reaches) and some with a zero task gradient."""
    n, width = int(rng.integers(2, 8)), int(rng.integers(3, 40))
    sizes = [width, 3, 2]
    g = rng.standard_normal((n, sum(sizes)))
    reached = np.ones((n, len(sizes)), bool)
    if trial % 3 == 0:  # tensors 1 and 2 are heads of one task each
        reached[:, 1:] = False
        reached[0, 1] = True
        reached[n - 1, 2] = True
    if trial % 5 == 0:
        g[rng.integers(0, n)] = 0.0
    elem = np.repeat(reached, sizes, axis=1)
    g[~elem] = 0.0
    return g, reached, elem, sizes


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gram_matrix_pcgrad_equals_the_elementwise_implementations(reduction):
    """The Gram-coefficient PCGrad equals both the numpy Algorithm 1 (reference_projection,
    the auditor's pc_np) and the former in-place torch implementation on 150 random cases,
    including task-specific parameters and zero task gradients; surgery_backward on real
    parameters gives the same."""
    rng = np.random.default_rng(5)
    for trial in range(150):
        g, reached, elem, sizes = random_case(rng, trial)
        n = g.shape[0]
        gen = torch.Generator().manual_seed(trial)
        orders = [torch.randperm(n, generator=gen).tolist() for _ in range(n)]
        ref = reference_projection(g, orders)
        old = old_project(torch.tensor(g), torch.Generator().manual_seed(trial)).numpy()
        np.testing.assert_allclose(old, ref, rtol=1e-9, atol=1e-12)
        expected = ref.sum(0)
        if reduction == "mean":
            expected = np.where(elem.all(0), ref.mean(0), expected)
        got = PCGrad(seed=trial, reduction=reduction).combine(torch.tensor(g), torch.tensor(elem))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-11)
        # through surgery_backward: losses linear in the parameters, with exactly g as gradients
        params = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in sizes]
        losses = []
        for t in range(n):
            terms = [(p * torch.tensor(c)).sum() for p, c, r in
                     zip(params, np.split(g[t], np.cumsum(sizes)[:-1]), reached[t], strict=True)
                     if r]  # fmt: skip
            losses.append(torch.stack(terms).sum())
        stats = surgery_backward(losses, params, PCGrad(seed=trial, reduction=reduction),
                                 stats=True)  # fmt: skip
        got2 = np.concatenate([p.grad.numpy() for p in params])
        np.testing.assert_allclose(got2, expected, rtol=1e-9, atol=1e-11)
        conflicts = sum(g[i] @ g[j] < 0 for i in range(n) for j in range(i + 1, n))
        assert stats.n_conflicts == conflicts


def test_a_tiny_but_nonzero_gradient_projects_like_the_reference():
    """|g_2|^2 = 1e-32 > 0: the reference projects with dot / |g_2|^2 = -1e16 -> g_1 = (0, 1);
    a clamp of |g_2|^2 at 1e-30 gave (-0.99, 1)."""
    g = torch.tensor([[-1.0, 1.0], [1e-16, 0.0]], dtype=torch.float64)
    for seed in range(4):
        projected = PCGrad(seed=seed).project(g)
        torch.testing.assert_close(projected[0], torch.tensor([0.0, 1.0], dtype=g.dtype))
        # g_2 . g_1 = -1e-16 < 0: g_2 + 0.5e-16 g_1 = (0.5e-16, 0.5e-16)
        torch.testing.assert_close(projected[1], torch.tensor([0.5e-16, 0.5e-16], dtype=g.dtype),
                                   rtol=1e-12, atol=1e-30)  # fmt: skip
    zero = torch.tensor([[-1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(PCGrad(seed=0).project(zero), zero)  # zero norm: no projection


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("absent", [False, True])
def test_the_baseline_builds_no_task_gradients_and_equals_their_reduction(reduction, absent,
                                                                          monkeypatch):  # fmt: skip
    """The baseline is one backward (task_gradients is never called) and equals the reduction
    of the per-task gradients: mean on the tensors every task reaches (a task absent here,
    None, reaches none), sum on the others; an unused parameter keeps no gradient (sum) or 0."""
    from ftlab.mtl import surgery

    shared = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    head_a = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    head_b = torch.nn.Parameter(torch.tensor([-1.5], dtype=torch.float64))
    unused = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    params = [shared, head_a, head_b, unused]

    def losses():
        out = [(shared.sum() * head_a).sum() ** 2, (shared[0] - head_b).sum() ** 2]
        return out + [None] if absent else out

    g = task_gradients(losses(), params)[0].numpy()
    expected = g.sum(0)
    if reduction == "mean" and not absent:
        expected[:2] = g[:, :2].mean(0)  # shared is reached by both tasks
    monkeypatch.setattr(surgery, "task_gradients", None)  # any call would fail
    surgery_backward(losses(), params, make_combiner("baseline", seed=0, reduction=reduction))
    got = np.concatenate([p.grad.numpy() if p.grad is not None else np.zeros(p.numel())
                          for p in params])  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_step_of_two_micro_steps_projects_the_summed_task_gradients():
    """The audit's case: micro-batches {(1,0),(-1,1)} and {(1,0),(1,1)}. Projected per
    micro-batch and summed: (2.5, 2.5); PCGrad of the step's gradients (2,0),(0,2): (2, 2)."""
    from ftlab.mtl.surgery import SurgeryStep

    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    micro = [torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64),
             torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)]  # fmt: skip
    step = SurgeryStep([w], PCGrad(seed=0), 2)
    for g in micro:
        step.add([w @ g[0], w @ g[1]])  # d(w . g_t)/dw = g_t
        assert w.grad is None
    stats = step.finish(stats=True)
    assert w.grad.tolist() == [2.0, 2.0] and stats.n_conflicts == 0
    per_micro = sum(PCGrad(seed=0).combine(g, torch.ones_like(g, dtype=torch.bool)) for g in micro)
    assert per_micro.tolist() == [2.5, 2.5]
    with pytest.raises(ValueError, match="before any micro-step"):
        SurgeryStep([w], PCGrad(seed=0), 2).finish()
    with pytest.raises(ValueError, match="outside 0..1"):
        SurgeryStep([w], PCGrad(seed=0), 2).add([w.sum()], [2])
