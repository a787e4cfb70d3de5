"""A multi-task run's mtl_manifest.json: which checkpoints it kept and which one is selected.

Written by both trainers (ftlab.mtl.world_train, ftlab.mtl.trl_train) when they publish; the
workflow reads it through the training checkpoint rule (rules/mtl.smk) to evaluate exactly the
kept checkpoints. Kept = the newest keep_last saved ones plus the selected one (best
validation, ties: the earliest; ftlab.mtl.early_stopping.kept_checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path

from ftlab.io import read_json
from ftlab.mtl.early_stopping import EarlyStopping, kept_checkpoints

MANIFEST = "mtl_manifest.json"


def stop_reason(stopper: EarlyStopping, max_epochs: int) -> str:
    """early_stopping only when the rule ended the run before max_epochs; a rule that fires at
    the last epoch stopped nothing (the run trained every epoch): max_epochs."""
    if stopper.stopped_epoch is not None and stopper.stopped_epoch < max_epochs:
        return "early_stopping"
    return "max_epochs"


def build_manifest(
    saved: list[int], values: dict, spe: int, stopper: EarlyStopping, max_epochs: int,
    checkpoints: dict, validation: dict, inputs: dict,
) -> dict:  # fmt: skip
    """saved: epochs checkpointed in order; values: validation value of each saved epoch."""
    kept, selected = kept_checkpoints(saved, values, checkpoints["keep_last"], stopper.mode)
    reason = stop_reason(stopper, max_epochs)
    return {
        "model_name": inputs["model_name"],
        "method": inputs["method"],
        "seed": inputs["seed"],
        "tasks": inputs["tasks"],
        "steps_per_epoch": spe,
        "max_epochs": max_epochs,
        "last_epoch": saved[-1],
        "stop_reason": reason,
        "metric": validation["metric"],
        "mode": stopper.mode,
        "checkpoints": [
            {"step": e * spe, "epoch": e, "validation": values[e], "selected": e == selected}
            for e in kept
        ],
        "selected": {"step": selected * spe, "epoch": selected, "validation": values[selected]},
        "saved_epochs": list(saved),
        "validations": [{"epoch": e, "value": v} for e, v in stopper.history],
        "best_validation": {"epoch": stopper.best_epoch, "value": stopper.best},
        "early_stopping": dict(inputs["early_stopping"]),
    }


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def read_manifest(model_dir: str | Path) -> dict:
    return read_json(Path(model_dir) / MANIFEST)


def kept_steps(model_dir: str | Path) -> list[int]:
    return [c["step"] for c in read_manifest(model_dir)["checkpoints"]]
