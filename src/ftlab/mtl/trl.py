"""Gradient surgery inside TRL's trainers (objectives sft and grpo, the GPU path).

`SurgeryMixin.training_step` replaces the Trainer's "compute_loss, backward" with: prepare the
batch as the trainer does (GRPO: generate, score, compute advantages), split its rows by task
("task_ids", carried from the dataset's "task" column), one `compute_loss` per task on its rows,
and `surgery_backward` of those losses (ftlab.mtl.surgery), each divided by the gradient
accumulation steps as the Trainer divides its loss; clipping, the optimizer and the scheduler
stay the Trainer's. Each task's loss is the trainer's own loss on that task's rows (SFT: mean
token loss; GRPO: its configured loss_type), so the baseline (plain sum) weighs tasks equally,
as the world objective does.

Multi-GPU: per-task gradients are computed with torch.autograd.grad, which DDP's reducer does
not see; with torch.distributed initialized they are all-reduced (averaged) before the
projection, so every rank projects the same global task gradients. (Not run here: this
project's CI has no GPU.)

Status: this mixin is the surgery step for any Trainer and is tested on CPU
(tests/test_mtl_trl.py); the sft/grpo run loop around it (the "task" column carried into
`task_ids` by the collator / GRPO's scored batch, the early-stopping callback, the manifest) is
not built yet, so objective sft/grpo studies plan and dry-run but their training job stops
with an error naming 'mtl.objective'.
"""

from __future__ import annotations

import logging

import torch

from ftlab.mtl.surgery import Combiner, surgery_backward

log = logging.getLogger("ftlab.mtl.trl")


def split_by_task(inputs: dict, task_ids: torch.Tensor) -> dict[int, dict]:
    """{task: the rows of `inputs` of that task}; tensors whose first dimension is the batch
    are indexed, everything else (scalars, counts) is passed unchanged."""
    n = len(task_ids)
    out = {}
    for t in torch.unique(task_ids).tolist():
        mask = task_ids == t
        out[t] = {
            k: v[mask] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n else v
            for k, v in inputs.items()
        }
    return out


def _all_reduce_mean(grads: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(grads)
        grads /= torch.distributed.get_world_size()
    return grads


class SurgeryMixin:
    """Put before a transformers/TRL Trainer class: class T(SurgeryMixin, SFTTrainer)."""

    surgery: Combiner

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        task_ids = inputs.pop("task_ids")
        losses = []
        with self.compute_loss_context_manager():
            for sub in split_by_task(inputs, task_ids).values():
                losses.append(self.compute_loss(model, sub) / self.args.gradient_accumulation_steps)
        params = [p for p in model.parameters() if p.requires_grad]
        surgery_backward(losses, params, self.surgery, reduce_grads=_all_reduce_mean)
        return torch.stack([loss.detach() for loss in losses]).sum()
