"""The epoch schedule of a multi-task TRL run as a TrainerCallback: validation, early stopping,
checkpoints and their pruning, with the same rules as the world objective.

Epochs are counted in optimizer steps (steps_per_epoch, fixed before training, as
ftlab.mtl.study plans them). At the end of epoch e:
- a scheduled validation (every `every_epochs`, the last epoch, and epoch 0 before training
  when asked) feeds ftlab.mtl.early_stopping.EarlyStopping, which may stop the run;
- a checkpoint is saved every `save_every_epochs`, at an early stop and at the last epoch,
  each with its own validation value (validated for it when e was not a scheduled epoch);
- saved checkpoints that are neither among the newest keep_last nor the best are deleted.
What a resumed run needs besides the Trainer's own state goes into each checkpoint folder:
mtl_state.json (early stopping, values, saved epochs) and mtl_combiner.pt (PCGrad's order
generator); then ftlab_checkpoint.json, written last, marks the folder complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers

from ftlab.checkpointing import META_FILE, fsync_files
from ftlab.io import atomic_write_text, read_json
from ftlab.mtl.early_stopping import EarlyStopping, kept_checkpoints, save_epochs, validation_epochs

log = logging.getLogger("ftlab.mtl.train")

STATE_FILE = "mtl_state.json"
COMBINER_FILE = "mtl_combiner.pt"
STATE_FILES = frozenset({STATE_FILE, COMBINER_FILE})


class EpochSchedule(transformers.TrainerCallback):
    """validate(model) -> the validation value; combiner: saved with each checkpoint; info:
    what every checkpoint's ftlab_checkpoint.json records."""

    def __init__(self, *, spe: int, max_epochs: int, validation: dict, early_stopping: dict,
                 checkpoints: dict, validate: Callable, combiner, info: dict):  # fmt: skip
        self.spe, self.max_epochs, self.validate = spe, max_epochs, validate
        self.metric = validation["metric"]
        self.val_epochs = set(validation_epochs(max_epochs, validation["every_epochs"], False))
        self.before_training = validation["before_training"]
        self.save_at = set(save_epochs(max_epochs, checkpoints["save_every_epochs"]))
        self.keep_last = checkpoints["keep_last"]
        self.stopper = EarlyStopping(**early_stopping)
        self.combiner, self.info = combiner, info
        self.values: dict[int, float] = {}
        self.saved: list[int] = []
        self.resumed = False

    @property
    def finished(self) -> bool:
        """Whether the run has ended (early stop, or its last epoch saved)."""
        return self.stopper.stopped_epoch is not None or self.max_epochs in self.saved

    def load(self, checkpoint: Path) -> None:
        state = read_json(checkpoint / STATE_FILE)
        self.stopper = EarlyStopping.from_state(state["early_stopping"])
        self.values = {int(k): v for k, v in state["values"].items()}
        self.saved = list(state["saved"])
        self.combiner.load_state_dict(torch.load(checkpoint / COMBINER_FILE, weights_only=False))
        self.resumed = True

    # -- Trainer events ---------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.before_training and not self.resumed and 0 not in self.values:
            self.values[0] = self.validate(model)
            self.stopper.update(0, self.values[0])
            log.info("epoch 0 (before training): validation %s %.4f", self.metric, self.values[0])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        epoch, rest = divmod(state.global_step, self.spe)
        if rest or epoch in self.saved:
            return
        stopped = epoch in self.val_epochs and self._scheduled_validation(epoch, model)
        if epoch in self.save_at or stopped or epoch >= self.max_epochs:
            if epoch not in self.values:  # every checkpoint carries its own validation value
                self.values[epoch] = self.validate(model)
            self.saved.append(epoch)
            control.should_save = True
        if stopped:
            control.should_training_stop = True

    def _scheduled_validation(self, epoch: int, model) -> bool:
        self.values[epoch] = self.validate(model)
        stopped = self.stopper.update(epoch, self.values[epoch])
        s = self.stopper
        log.info("epoch %d: validation %s %.4f (best %.4f at epoch %s, wait %d)%s", epoch,
                 self.metric, self.values[epoch], s.best, s.best_epoch, s.wait,
                 " -> early stop" if stopped else "")  # fmt: skip
        return stopped

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        epoch = state.global_step // self.spe
        self._write_state(ckpt)
        fsync_files(ckpt)  # the stamp must never vouch for data still in flight
        info = {**self.info, "step": state.global_step, "epoch": epoch,
                "validation_value": self.values[epoch],
                "created_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        atomic_write_text(ckpt / META_FILE, json.dumps(info, indent=2) + "\n")
        log.info("saved %s (epoch %d, validation %.4f)", ckpt, epoch, self.values[epoch])
        self._prune(Path(args.output_dir))

    def _write_state(self, ckpt: Path) -> None:
        state = {"early_stopping": self.stopper.state_dict(), "values": self.values,
                 "saved": self.saved}  # fmt: skip
        atomic_write_text(ckpt / STATE_FILE, json.dumps(state) + "\n")
        torch.save(self.combiner.state_dict(), ckpt / COMBINER_FILE)

    def _prune(self, state_dir: Path) -> None:
        """Delete saved checkpoints that are neither among the newest keep_last nor the best."""
        kept, _ = kept_checkpoints(self.saved, self.values, self.keep_last, self.stopper.mode)
        for epoch in self.saved:
            d = state_dir / f"checkpoint-{epoch * self.spe}"
            if epoch not in kept and d.exists():
                shutil.rmtree(d)
                log.info("removed %s (keep_last)", d)
