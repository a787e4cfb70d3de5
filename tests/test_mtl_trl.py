"""SurgeryMixin: a Trainer's step with per-task losses and gradient surgery (CPU)."""

from types import SimpleNamespace

import numpy as np
import torch
from test_mtl_surgery import reference_projection

from ftlab.mtl.surgery import PCGrad
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
    trainer.surgery = PCGrad(seed=4)
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


def test_the_mixin_overrides_trl_trainers():
    from trl import GRPOTrainer, SFTTrainer

    for base in (SFTTrainer, GRPOTrainer):
        cls = type(f"Surgery{base.__name__}", (SurgeryMixin, base), {})
        assert cls.training_step is SurgeryMixin.training_step
