"""SurgeryMixin: a Trainer's step with per-task losses and gradient surgery (CPU)."""

from types import SimpleNamespace

import numpy as np
import torch
from test_mtl_surgery import reference_projection

from ftlab.mtl.surgery import Baseline, PCGrad
from ftlab.mtl.trl import SurgeryMixin, split_by_task


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1, dtype=torch.float64)


class StubTrainer:
    """The three Trainer hooks the mixin uses, with a squared-error loss."""

    def __init__(self, grad_accum):
        self.args = SimpleNamespace(gradient_accumulation_steps=grad_accum)
        self.accelerator = SimpleNamespace(sync_gradients=True)  # the Trainer sets it per step
        self.seen = []

    def _prepare_inputs(self, inputs):
        return dict(inputs)

    def compute_loss_context_manager(self):
        return torch.enable_grad()

    def compute_loss(self, model, inputs):
        self.seen.append(inputs["x"].shape[0])
        return ((model.lin(inputs["x"]).squeeze(-1) - inputs["y"]) ** 2).mean()


class SurgeryStub(SurgeryMixin, StubTrainer):
    pass


def test_split_by_task_indexes_batch_tensors_only():
    inputs = {"x": torch.arange(8).view(4, 2), "n": torch.tensor(7), "tag": "a"}
    parts = split_by_task(inputs, torch.tensor([1, 0, 1, 1]))
    assert parts[0]["x"].tolist() == [[2, 3]] and parts[1]["x"].shape == (3, 2)
    assert parts[0]["n"] == 7 and parts[1]["tag"] == "a"


def test_training_step_applies_pcgrad_to_per_task_losses():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    x[3:], y[3:] = x[:3], -5 * y[:3]  # same inputs, opposite targets: the tasks conflict
    task_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    trainer = SurgeryStub(grad_accum=2)
    trainer.surgery, trainer.n_tasks = PCGrad(seed=4), 2
    model = Model()
    loss = trainer.training_step(model, {"x": x, "y": y, "task_ids": task_ids})
    assert trainer.seen == [3, 3]

    # independent: per-task gradients of (loss / grad_accum), projected as the reference
    ref_model = Model()
    grads = []
    for t in (0, 1):
        m = task_ids == t
        ref_model.zero_grad()
        out = ((ref_model.lin(x[m]).squeeze(-1) - y[m]) ** 2).mean() / 2
        out.backward()
        grads.append(torch.cat([ref_model.lin.weight.grad.flatten(), ref_model.lin.bias.grad]))
    g = torch.stack(grads).numpy()
    gen_orders = torch.Generator().manual_seed(4)
    orders = [torch.randperm(2, generator=gen_orders).tolist() for _ in range(2)]
    expected = reference_projection(g, orders).sum(0)
    got = torch.cat([model.lin.weight.grad.flatten(), model.lin.bias.grad]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert float(g[0] @ g[1]) < 0  # the case is a conflicting one
    assert float(loss) > 0


def flat(model):
    return torch.cat([model.lin.weight.grad.flatten(), model.lin.bias.grad])


def accumulation_case():
    """Two micro-batches whose task gradients conflict differently: task 1's targets flip."""
    gen = torch.Generator().manual_seed(5)
    micro = []
    for sign in (1.0, -3.0):
        x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        y = torch.randn(6, generator=gen, dtype=torch.float64)
        x[3:], y[3:] = x[:3], sign * -4 * y[:3]
        micro.append({"x": x, "y": y, "task_ids": torch.tensor([0, 0, 0, 1, 1, 1])})
    micro[1]["task_ids"] = torch.tensor([0, 0, 1, 1, 1, 1])  # task shares differ per micro-batch
    return micro


def run_steps(trainer, model, micro, grad_accum):
    for k, inputs in enumerate(micro):
        trainer.accelerator.sync_gradients = (k + 1) % grad_accum == 0
        trainer.training_step(model, inputs)


def task_grads(micro, grad_accum):
    """Independent: [micro-step][task] gradient of that task's mean loss / grad_accum."""
    out = []
    for inputs in micro:
        row = []
        for t in (0, 1):
            m = inputs["task_ids"] == t
            ref = Model()
            loss = ((ref.lin(inputs["x"][m]).squeeze(-1) - inputs["y"][m]) ** 2).mean()
            (loss / grad_accum).backward()
            row.append(flat(ref).numpy())
        out.append(np.stack(row))
    return out


def test_pcgrad_projects_the_accumulated_task_gradients_once_per_optimizer_step():
    """grad_accum 2: the step's gradient is PCGrad of the per-task gradients summed over the
    micro-steps (one projection, one order draw per task), not the sum of per-micro-step
    projections; the gradient stays untouched until the last micro-step."""
    micro = accumulation_case()
    trainer = SurgeryStub(grad_accum=2)
    trainer.surgery, trainer.n_tasks = PCGrad(seed=4), 2
    model = Model()
    trainer.accelerator.sync_gradients = False
    trainer.training_step(model, micro[0])
    assert model.lin.weight.grad is None  # nothing added before the optimizer step's end
    trainer.accelerator.sync_gradients = True
    trainer.training_step(model, micro[1])
    got = flat(model).numpy()

    g = task_grads(micro, 2)
    gen_orders = torch.Generator().manual_seed(4)
    orders = [torch.randperm(2, generator=gen_orders).tolist() for _ in range(2)]
    expected = reference_projection(g[0] + g[1], orders).sum(0)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    per_micro = sum(reference_projection(gm, orders).sum(0) for gm in g)
    assert np.abs(per_micro - expected).max() > 1e-3  # the case tells the two apart
    # here the first micro-step's tasks conflict, the step's do not: PCGrad is the plain sum
    assert float(g[0][0] @ g[0][1]) < 0 and float((g[0] + g[1])[0] @ (g[0] + g[1])[1]) > 0
    np.testing.assert_allclose(got, (g[0] + g[1]).sum(0), rtol=1e-10)
    assert trainer._surgery_step is None  # the next step starts afresh


def test_grad_accum_one_projects_every_micro_step_as_before():
    """grad_accum 1: each training_step is an optimizer step; the gradient after two such
    steps (without zeroing) is the sum of the two steps' projections."""
    micro = accumulation_case()
    trainer = SurgeryStub(grad_accum=1)
    trainer.surgery, trainer.n_tasks = PCGrad(seed=4), 2
    model = Model()
    run_steps(trainer, model, micro, 1)
    g = task_grads(micro, 1)
    gen_orders = torch.Generator().manual_seed(4)
    orders = [torch.randperm(2, generator=gen_orders).tolist() for _ in range(4)]
    expected = reference_projection(g[0], orders[:2]).sum(0)
    expected += reference_projection(g[1], orders[2:]).sum(0)
    np.testing.assert_allclose(flat(model).numpy(), expected, rtol=1e-10)


def test_the_baseline_under_accumulation_is_the_summed_loss():
    """Linear: the baseline adds each micro-step's summed task losses; with reduction mean the
    tensors every task reaches get the step's mean (divided once, at the last micro-step)."""
    micro = accumulation_case()
    g = task_grads(micro, 2)
    for reduction, divide in (("sum", 1), ("mean", 2)):
        trainer = SurgeryStub(grad_accum=2)
        trainer.surgery, trainer.n_tasks = Baseline(reduction), 2
        model = Model()
        run_steps(trainer, model, micro, 2)
        expected = (g[0] + g[1]).sum(0) / divide
        np.testing.assert_allclose(flat(model).numpy(), expected, rtol=1e-10)


def test_a_task_absent_from_one_micro_step_is_projected_with_the_step():
    """Task 1 only in the second micro-batch: the step projects both tasks (T = 2)."""
    micro = accumulation_case()
    micro[0] = {k: v[:3] for k, v in micro[0].items()}  # task 0's rows only
    trainer = SurgeryStub(grad_accum=2)
    trainer.surgery, trainer.n_tasks = PCGrad(seed=4, reduction="mean"), 2
    model = Model()
    run_steps(trainer, model, micro, 2)
    g0 = task_grads([micro[0]], 2)[0][0]
    g = task_grads([micro[1]], 2)[0]
    g[0] += g0
    gen_orders = torch.Generator().manual_seed(4)
    orders = [torch.randperm(2, generator=gen_orders).tolist() for _ in range(2)]
    expected = reference_projection(g, orders).mean(0)
    np.testing.assert_allclose(flat(model).numpy(), expected, rtol=1e-10)


def test_the_mixin_overrides_trl_trainers():
    from trl import GRPOTrainer, SFTTrainer

    for base in (SFTTrainer, GRPOTrainer):
        cls = type(f"Surgery{base.__name__}", (SurgeryMixin, base), {})
        assert cls.training_step is SurgeryMixin.training_step
