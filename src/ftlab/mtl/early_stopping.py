"""Early stopping on a validation metric, and which checkpoints a run keeps.

Seed 000's recipe: validate every 3 epochs (and before training), stop once the metric has not
improved by more than min_delta for `patience` epochs ("Patience of 3 epochs",
early_stopping_patience=3), never before min_epochs, mode max. Spelled out (Keras'
EarlyStopping rule, with min_epochs only blocking the stop):
- an improvement is value > best + min_delta (mode max) or value < best - min_delta (mode min);
  the first validation always sets `best` (and `best_epoch`);
- each validation without improvement adds one to `wait`; an improvement resets it to 0;
- the run stops after a validation at epoch e when e >= min_epochs and
  - `patience_unit: epochs` (default, the seed's words): e - best_epoch >= patience - the
    epochs trained since the last improvement, however often validation runs (validation
    every 3 epochs, patience 3: the first validation without improvement, 3 epochs later);
  - `patience_unit: validations` (option; Keras/HF Trainer's EarlyStoppingCallback and a
    verl-style counter incremented per validation call): wait >= patience (validation every
    3 epochs, patience 3: 9 epochs without improvement).
  With validation every epoch the two agree.
Only the scheduled validations drive the decision; `record`ed values (validations made for
checkpoint selection) do not.

Checkpoints (`kept_checkpoints`): saved every `save_every` epochs and at the last epoch trained
(early stop or max epochs, as verl saves at the last step); the newest `keep_last` are kept,
plus the selected one: the kept checkpoint with the best validation value (ties: the earliest),
which is never deleted (as HF Trainer keeps its best checkpoint under save_total_limit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MODES = ("max", "min")
PATIENCE_UNITS = ("epochs", "validations")


@dataclass
class EarlyStopping:
    min_epochs: int
    patience: int
    min_delta: float
    mode: str
    enabled: bool = True
    patience_unit: str = "epochs"
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped_epoch: int | None = None
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"early stopping mode must be one of {MODES}, not {self.mode!r}")
        if self.patience_unit not in PATIENCE_UNITS:
            raise ValueError(f"mtl.early_stopping.patience_unit must be one of {PATIENCE_UNITS}, "
                             f"not {self.patience_unit!r}")  # fmt: skip
        if self.patience < 1 or self.min_epochs < 0 or self.min_delta < 0:
            raise ValueError("early stopping needs patience >= 1, min_epochs >= 0, min_delta >= 0")

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, value: float) -> bool:
        """Feed the scheduled validation at `epoch`; True when training should stop now."""
        self.history.append((int(epoch), float(value)))
        if self.improves(value):
            self.best, self.best_epoch, self.wait = float(value), int(epoch), 0
        else:
            self.wait += 1
        waited = self.wait if self.patience_unit == "validations" else epoch - self.best_epoch
        stop = self.enabled and waited >= self.patience and epoch >= self.min_epochs
        if stop:
            self.stopped_epoch = int(epoch)
        return stop

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EarlyStopping:
        state = dict(state)
        state["history"] = [tuple(h) for h in state["history"]]
        return cls(**state)


def save_epochs(max_epochs: int, save_every: int) -> list[int]:
    """Epochs that save a checkpoint when the run goes the full length (the last included)."""
    epochs = list(range(save_every, max_epochs, save_every))
    return epochs + [max_epochs]


def validation_epochs(max_epochs: int, every: int, before_training: bool) -> list[int]:
    """Epochs of the scheduled validations (0 = before training); the last epoch included."""
    epochs = ([0] if before_training else []) + list(range(every, max_epochs, every))
    return epochs + [max_epochs]


def better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def select(values: dict[int, float], mode: str) -> int:
    """The epoch with the best value (ties: the earliest)."""
    if not values:
        raise ValueError("no validated checkpoint to select from")
    best = None
    for epoch in sorted(values):
        if best is None or better(values[epoch], values[best], mode):
            best = epoch
    return best


def kept_checkpoints(saved: list[int], values: dict[int, float], keep_last: int, mode: str):
    """(kept epochs, selected epoch): the newest keep_last saved ones plus the selected one."""
    saved = sorted(saved)
    selected = select({e: values[e] for e in saved}, mode)
    kept = sorted(set(saved[-keep_last:]) | {selected})
    return kept, selected
