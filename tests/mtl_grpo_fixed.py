"""Worker side of tests/test_mtl_grpo_ddp.py (imported by name in every launched process).

`train` runs ftlab.mtl.steps.train_run (objective grpo) with two test doubles, so that a run's
batches do not depend on how many processes share them:
- fixed completions: the completion of row i of a generation batch at optimizer step s is drawn
  from a generator seeded with (s, i), i the row's place in the GLOBAL batch (this process's
  rows are rows rank x local_size, ...: TRL's RepeatSampler yields the same indices for any
  process count and accelerate gives rank r the r-th local batch). TRL samples from the policy
  with the process's torch generator instead: 1 process draws all rows from one stream, 2
  processes from two streams seeded alike, so their completions differ from the first draw on.
- the reward: the test rewards of conflicting tasks (test_mtl_trl_train.REWARDS; the format
  reward weighs 0), a function of the completion text and the row's task only.
Everything else - TRL's scoring, group advantages over the gathered rewards, the loss and its
global-token normalizer, the surgery mixin's split by task, the weighted all-reduce, PCGrad -
runs as in a real job. Each process appends its tasks per step to <log_dir>/rank<r>.jsonl.
`weighting: "absent_zero"` replaces the mixin's cross-rank weights by the weighting where a
process without rows of a task does not count (the negative control). `counts: "local"`
(task_loss task_mean) normalizes each task by this process's tokens of it, not all processes'
(the negative control of the per-task token all-reduce).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MAX_COMPLETION = 6
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 "


def train(*, log_dir: str, weighting: str | None = None, rollouts: str = "fixed",
          counts: str | None = None, **kwargs) -> None:  # fmt: skip
    """steps.train_run(**kwargs) with the test doubles; rollouts "sampled": TRL's own
    generation (from the policy, with the process's generator) instead of fixed completions."""
    from test_mtl_trl_train import REWARDS

    from ftlab.mtl import steps, trl, trl_train

    make_class, make_trainer = trl.surgery_trainer_class, trl_train._trainer
    weight = trl.SurgeryMixin._task_weight

    def fixed_class(objective):
        base = make_class(objective)

        class FixedRollouts(base):
            def _generate_single_turn(self, prompt_ids, images, multimodal_fields,
                                      num_generations, has_tool_images=False):  # fmt: skip
                if rollouts == "sampled":
                    return super()._generate_single_turn(
                        prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                    )
                tok = self.processing_class
                vocab = tok.convert_tokens_to_ids(list(CHARS))
                local, rank = len(prompt_ids), self.accelerator.process_index
                out = []
                for i in range(local):
                    g = torch.Generator().manual_seed(
                        10_000 * self.state.global_step + rank * local + i
                    )
                    n = int(torch.randint(2, MAX_COMPLETION + 1, (1,), generator=g))
                    picks = torch.randint(0, len(vocab), (n,), generator=g).tolist()
                    out.append([vocab[p] for p in picks])
                return out, None

            def _step_task_tokens(self, slices):
                if counts != "local":
                    return super()._step_task_tokens(slices)
                all_reduce = torch.distributed.all_reduce
                torch.distributed.all_reduce = lambda t: None
                try:  # this process's count x processes: the right scale, the wrong count
                    return super()._step_task_tokens(slices) * self.accelerator.num_processes
                finally:
                    torch.distributed.all_reduce = all_reduce

            def _generate_and_score_completions(self, inputs):
                out = super()._generate_and_score_completions(inputs)
                path = Path(log_dir) / f"rank{self.accelerator.process_index}.jsonl"
                line = {"step": self.state.global_step, "tasks": out[trl.TASK_IDS].tolist(),
                        "advantages": out["advantages"].tolist(),
                        "completions": out["completion_ids"].tolist()}  # fmt: skip
                with path.open("a") as fh:
                    fh.write(json.dumps(line) + "\n")
                return out

        return FixedRollouts

    def absent_zero(self, sub):
        return 0.0 if sub is None else weight(self, sub)

    trl.surgery_trainer_class = fixed_class
    trl_train._trainer = lambda *a, **k: make_trainer(*a, reward_funcs=REWARDS, **k)
    if weighting == "absent_zero":
        trl.SurgeryMixin._task_weight = absent_zero
    elif weighting is not None:
        raise ValueError(f"unknown weighting {weighting!r}")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    try:
        steps.train_run(**kwargs)
    finally:
        trl.surgery_trainer_class, trl_train._trainer = make_class, make_trainer
        trl.SurgeryMixin._task_weight = weight
