"""Gradient surgery inside TRL's trainers (objectives sft and grpo).

`SurgeryMixin.training_step` replaces the Trainer's "compute_loss, backward" with: prepare the
batch as the trainer does (GRPO: generate, score, compute advantages), split its rows by task
("task_ids"), one `compute_loss` per task on its rows, and `surgery_backward` of those losses
(ftlab.mtl.surgery: baseline = their plain sum, pcgrad = projected); clipping, the optimizer
and the scheduler stay the Trainer's. Both methods take this same path, so they differ only in
the combiner. Gradient accumulation: one `SurgeryStep` per optimizer step sums the per-task
gradients of its micro-steps and is finished on the micro-step where the Trainer sets
`accelerator.sync_gradients` (the last before the optimizer step), so PCGrad projects the
step's task gradients once, as the paper and seed 000 (one pc_backward per update) do.

Where the task of a row comes from: the training rows carry "task" (the mix, ftlab.mtl.steps);
ftlab.mtl.trl_data turns it into an integer "task_ids" column.
- SFT: `TaskCollator` wraps TRL's collator and keeps the column as a tensor, and the trainer
  keeps it among the signature columns (the Trainer would drop it as unused).
- GRPO: the dataloader yields raw rows; `_generate_and_score_completions` (the scored batch:
  prompt/completion ids, advantages, ...) gets "task_ids" in the row order of its inputs, and
  TRL's `_prepare_inputs` shuffles and splits that dict in unison, so each micro-batch has
  its rows' tasks.

Each task's loss is the trainer's own loss on that task's rows:
- SFT: the mean token loss of the task's completions (tasks weigh equally in the sum, as in
  the world objective), divided by the gradient accumulation steps as the Trainer does;
- GRPO (`task_loss`, config mtl.trl.task_loss / baseline_task_loss): TRL's loss_type (dapo,
  TRL's default; its normalizer is a token count, which covers gradient accumulation) with
  - task_mean: the normalizer the task's own completion tokens in the optimizer step (all its
    micro-steps, all processes): each task's loss is its token mean over its rows of the step,
    as seed 000's PCGrad path (verl compute_policy_loss, loss_agg_mode token-mean, one loss
    per task batch). The counts come from the scored generation batch: per optimizer step of
    it (steps_per_generation / gradient_accumulation_steps windows of TRL's shuffled slices),
    one all-reduce of [windows, T] numbers per generation;
  - batch_share: the normalizer the token count of the whole step: the per-task losses sum to
    TRL's own GRPO loss (task t weighted by its token share N_t/N), so the baseline step is
    exactly TRL's step (seed 000's baseline: verl's plain token-mean loss, MTL disabled).

Batch composition (`per_task`, config mtl.trl.batch_composition): per_task replaces the
trainer's sampler by ftlab.mtl.trl_data.PerTaskSampler (seed 000's per-task loaders: every step
the same count of each task; GRPO keeps TRL's repeat structure); None (shuffled) keeps it.

Multi-GPU (DDP only): per-task gradients come from torch.autograd.grad, which DDP's reducer
does not see, so the forward passes run under `no_sync` and the task gradients are all-reduced
before the projection, weighted by each process's share of the task (SFT: its completion
tokens, 0 without rows, so the result is the global per-task token mean; GRPO: 1 on every
process, rows or not, as TRL divides each process's loss by the global token count / processes):
every rank projects the same global task gradients (ftlab.mtl.surgery.WeightedAllReduce). The
weights are per micro-step (one all-reduce of T numbers each); the gradients are all-reduced
once per optimizer step. The baseline builds no per-task gradient: one backward of the loss
weighted the same way per micro-step, then one all-reduce of the step's gradient (the same
global gradient by linearity). The tasks are those
present in any process (one all-reduce), so the combiner sees the tasks of the 1-process
global batch; a task absent from one process's micro-batch still gets a (no-grad)
compute_loss call there, so the collectives inside TRL's compute_loss stay matched, and its
per-row gathers are padded to the longest process (`_uneven_gathers`). Tested on CPU with 2
processes (gloo): SFT + PCGrad (tests/test_mtl_ddp.py) and GRPO with PCGrad and the baseline
on fixed completions (tests/test_mtl_grpo_ddp.py) equal 1 process with the same global
batch.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ftlab.mtl.surgery import Combiner, SurgeryStep, WeightedAllReduce

log = logging.getLogger("ftlab.mtl.trl")

TASK_IDS = "task_ids"
TASK_LOSSES = ("task_mean", "batch_share")  # mtl.trl.task_loss (GRPO)
# TRL loss types whose normalizer is the num_items_in_batch token count (task_mean sets it)
TOKEN_NORMALIZED = ("dapo", "cispo", "vespo")


def _check_task_mean(loss_type: str, args) -> None:
    """task_mean needs a token-count normalizer and optimizer steps inside one generation."""
    if loss_type not in TOKEN_NORMALIZED:
        raise ValueError(
            f"mtl.trl.task_loss task_mean needs a TRL loss_type normalized by the batch's token "
            f"count ({', '.join(TOKEN_NORMALIZED)}), not {loss_type!r}"
        )
    if args.steps_per_generation % args.gradient_accumulation_steps:
        raise ValueError(
            f"mtl.trl.task_loss task_mean: steps_per_generation ({args.steps_per_generation}) "
            f"must be a multiple of mtl.trl.grad_accum ({args.gradient_accumulation_steps})"
        )


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


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextlib.contextmanager
def _uneven_gathers(accelerator):
    """While per-task losses are computed: `accelerator.gather` pads per-row tensors to the
    longest process's rows (floats with NaN, others with 0). TRL's GRPO compute_loss gathers
    per-sequence metrics (clip ratios) with it, and gloo/NCCL all_gather needs the same size
    on every process, but a task's rows differ between processes (the collective mismatch
    aborted a 2-process run); its nanmin/nanmax metrics skip the NaN padding."""
    from accelerate.utils import pad_across_processes

    gather, own = accelerator.gather, "gather" in vars(accelerator)

    def padded(tensor):
        if torch.is_tensor(tensor) and tensor.dim() > 0:
            pad = float("nan") if tensor.is_floating_point() else 0
            tensor = pad_across_processes(tensor, dim=0, pad_index=pad)
        return gather(tensor)

    accelerator.gather = padded
    try:
        yield
    finally:
        if own:
            accelerator.gather = gather
        else:
            del accelerator.gather


class SurgeryMixin:
    """Put before a transformers/TRL Trainer class: class T(SurgeryMixin, SFTTrainer)."""

    surgery: Combiner
    n_tasks: int  # data parallel: every process has a (maybe None) loss for every task
    # True where compute_loss already divides by the accumulation steps (TRL's GRPO)
    loss_scaled_for_accumulation = False

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        task_ids = inputs.pop(TASK_IDS)
        no_sync = getattr(model, "no_sync", contextlib.nullcontext)  # DDP: we all-reduce
        with self.compute_loss_context_manager(), no_sync():
            tasks, losses, weights = self._task_losses(model, inputs, task_ids)
        step = getattr(self, "_surgery_step", None)
        if step is None:  # the first micro-step of an optimizer step
            params = [p for p in model.parameters() if p.requires_grad]
            step = self._surgery_step = SurgeryStep(params, self.surgery, self.n_tasks)
        data_parallel = WeightedAllReduce(weights) if _distributed() else None
        step.add(losses, tasks, data_parallel=data_parallel)
        # the Trainer sets sync_gradients on the last micro-step before the optimizer step:
        # PCGrad projects the step's accumulated task gradients once, there
        if self.accelerator.sync_gradients:
            self._surgery_step = None
            step.finish(data_parallel=data_parallel)
        present = [loss.detach() for loss in losses if loss is not None]
        return torch.stack(present).sum()

    def _task_losses(self, model, inputs, task_ids):
        """(task indices, their losses) for the tasks present here, in task order; data
        parallel: for the tasks present in ANY process (the tasks one process would see with
        the whole global batch), the loss None where absent here after a no-grad call on one
        row, so every process makes the same collective calls inside compute_loss; with this
        process's weight of each task."""
        scale = 1 if self.loss_scaled_for_accumulation else self.args.gradient_accumulation_steps
        parts = {t: self._task_inputs(t, sub) for t, sub in split_by_task(inputs, task_ids).items()}
        if not _distributed():
            losses = [self.compute_loss(model, sub) / scale for sub in parts.values()]
            return list(parts), losses, None
        present = torch.zeros(self.n_tasks, dtype=torch.int32, device=task_ids.device)
        present[list(parts)] = 1
        torch.distributed.all_reduce(present, op=torch.distributed.ReduceOp.MAX)
        tasks, losses, weights = present.nonzero().flatten().tolist(), [], []
        with _uneven_gathers(self.accelerator):
            for t in tasks:
                sub = parts.get(t)
                if sub is not None:
                    losses.append(self.compute_loss(model, sub) / scale)
                else:
                    with torch.no_grad():
                        first = split_by_task(inputs, torch.arange(len(task_ids)))[0]
                        self.compute_loss(model, first)
                    losses.append(None)
                weights.append(self._task_weight(sub))
        return tasks, losses, torch.tensor(weights, dtype=torch.float64)

    def _task_inputs(self, task: int, sub: dict) -> dict:
        """The rows of one task as compute_loss gets them (GRPO task_mean: its normalizer)."""
        return sub

    # batch_composition per_task: (rows of each task per step, steps per epoch); None = the
    # trainer's own sampler (shuffled)
    per_task: tuple[int, int] | None = None

    def _per_task_sampler(self, task_of_row, mini_repeat_count=1, repeat_count=1):
        from ftlab.mtl.trl_data import PerTaskSampler

        per_task, steps = self.per_task
        return PerTaskSampler(task_of_row, self.n_tasks, per_task, steps, self.args.seed,
                              mini_repeat_count, repeat_count)  # fmt: skip

    def _task_weight(self, sub: dict | None) -> float:
        """This process's weight of a task in the all-reduce (sub: its rows of the task here,
        None if it has none). SFT's loss is a per-process token mean: its predicted tokens (0
        without rows). GRPO's is TRL's loss over the process's tokens divided by the global
        token count / processes (DDP then averages): 1 on EVERY process, rows or not - the
        global gradient is the plain mean over processes, a process without rows adding 0
        (weighting only the processes with rows scales the task up by processes / those)."""
        if self.loss_scaled_for_accumulation:
            return 1.0
        if sub is None:
            return 0.0
        return float((sub["labels"][:, 1:] != -100).sum())


class TaskCollator:
    """Wraps a collator: each example's "task_ids" leaves before, and returns as a tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict]) -> dict:
        ids = torch.tensor([int(e[TASK_IDS]) for e in examples], dtype=torch.long)
        batch = self.inner([{k: v for k, v in e.items() if k != TASK_IDS} for e in examples])
        batch[TASK_IDS] = ids
        return batch


def surgery_trainer_class(objective: str):
    """SurgerySFTTrainer or SurgeryGRPOTrainer (TRL imported here: it is heavy)."""
    from trl import GRPOTrainer, SFTTrainer

    class SurgerySFTTrainer(SurgeryMixin, SFTTrainer):
        def __init__(self, *args, surgery: Combiner, n_tasks: int, per_task=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.surgery = surgery
            self.n_tasks = n_tasks
            self.per_task = per_task
            self.data_collator = TaskCollator(self.data_collator)

        def _get_train_sampler(self, train_dataset=None):
            if self.per_task is None:
                return super()._get_train_sampler(train_dataset)
            dataset = self.train_dataset if train_dataset is None else train_dataset
            # an optimizer step = batch_size x grad_accum x processes consecutive indices
            return self._per_task_sampler(dataset[TASK_IDS])

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if TASK_IDS not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, TASK_IDS]

    class SurgeryGRPOTrainer(SurgeryMixin, GRPOTrainer):
        loss_scaled_for_accumulation = True

        def __init__(self, *args, surgery: Combiner, task_index: dict[str, int],
                     task_loss: str, per_task=None, **kwargs):  # fmt: skip
            # what the sampler reads, set before TRL's __init__ (in case it builds a loader)
            self.per_task, self.task_index, self.n_tasks = per_task, task_index, len(task_index)
            super().__init__(*args, **kwargs)
            if task_loss not in TASK_LOSSES:
                raise ValueError(f"task_loss must be one of {TASK_LOSSES}, not {task_loss!r}")
            if task_loss == "task_mean":
                _check_task_mean(self.loss_type, self.args)
            self.surgery = surgery
            self.task_loss = task_loss
            self._task_tokens = None  # [windows, T]: each task's tokens per optimizer step

        def _get_train_sampler(self, dataset=None):
            if self.per_task is None:
                return super()._get_train_sampler(dataset)
            dataset = self.train_dataset if dataset is None else dataset
            prompts = self.args.generation_batch_size // self.num_generations
            if prompts != self.n_tasks * self.per_task[0]:  # a chunk is one generation batch
                raise ValueError(
                    f"batch_composition per_task: a generation batch of {prompts} prompts is "
                    f"not {self.per_task[0]} of each of the {self.n_tasks} tasks"
                )
            index = [self.task_index[t] for t in dataset["task"]]
            # TRL's RepeatSampler structure: num_generations copies of each prompt in a row,
            # each generation batch once per micro-step that uses it
            return self._per_task_sampler(
                index, self.num_generations, self.num_iterations * self.args.steps_per_generation
            )

        def _prepare_inputs(self, generation_batch):
            before = self._buffered_inputs
            inputs = super()._prepare_inputs(generation_batch)
            generated = self.model.training and self._buffered_inputs is not before
            if generated and self.task_loss == "task_mean":  # batch_share needs no counts
                self._task_tokens = self._step_task_tokens(self._buffered_inputs)
            return inputs

        def _step_task_tokens(self, slices: list[dict]) -> torch.Tensor:
            """[optimizer steps of the generation batch, T] completion tokens of each task
            over all processes (TRL's slices in micro-step order; one all-reduce)."""
            accum = self.args.gradient_accumulation_steps
            counts = torch.zeros(len(slices) // accum, self.n_tasks, dtype=torch.float64,
                                 device=slices[0]["completion_mask"].device)  # fmt: skip
            for k, sl in enumerate(slices):
                mask = sl["completion_mask"]
                if sl.get("tool_mask") is not None:  # TRL's loss mask
                    mask = mask * sl["tool_mask"]
                tokens = mask.sum(1).to(torch.float64)
                counts[k // accum].index_add_(0, sl[TASK_IDS], tokens)
            if _distributed():
                torch.distributed.all_reduce(counts)
            return counts

        def _task_inputs(self, task: int, sub: dict) -> dict:
            if self.task_loss == "batch_share":
                return sub
            # TRL's dapo normalizer is num_items_in_batch / processes x accum / steps_per_gen
            # (num_items: the generation batch's tokens): this value makes it the task's own
            # tokens in the optimizer step / processes, i.e. its loss the task's token mean
            spg, accum = self.args.steps_per_generation, self.args.gradient_accumulation_steps
            window = (self._step % spg) // accum
            items = self._task_tokens[window, task] * spg / accum
            return {**sub, "num_items_in_batch": items.to(torch.float32)}

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            device = out["advantages"].device
            out[TASK_IDS] = torch.tensor([self.task_index[x["task"]] for x in inputs],
                                         dtype=torch.long, device=device)  # fmt: skip
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            # GRPOTrainer.training_step counts micro-steps (when to generate again); the
            # mixin's step replaces it, so the count is kept here.
            loss = SurgeryMixin.training_step(self, model, inputs, num_items_in_batch)
            self._step += 1
            return loss

    return {"sft": SurgerySFTTrainer, "grpo": SurgeryGRPOTrainer}[objective]
