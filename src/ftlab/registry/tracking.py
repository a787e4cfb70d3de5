"""Optional logging of indexed results to Weights & Biases or MLflow (`ftlab export --to`).

Neither package is a dependency: each is imported only here, when asked for, and a missing one
is a one-line error saying what to install. Offline by default, so no network is needed: W&B
writes an offline run under ``results/<study>/wandb/`` (``wandb sync`` uploads it later) and
MLflow a file store under ``results/<study>/mlruns/``. One tracker run per model; each metric
value is logged with the checkpoint step as its step, as ``<task>/<metric>``. The run's training
curves (its training_log.csv) go into the same tracker run as ``train/<column>`` (seed 001's
``train/loss``, ``train/learning_rate``; the column names are the log's own, so the world kinds'
learning rate is ``train/lr``) at their training steps. Training and evaluation values of one
step are one log call, in increasing step order: W&B drops a step lower than one it has seen.
"""

from __future__ import annotations

from collections import defaultdict

INSTALL = {"wandb": "pip install wandb", "mlflow": "pip install mlflow"}


def _require(backend: str):
    import importlib

    try:
        return importlib.import_module(backend)
    except ImportError:
        raise ImportError(
            f"--to {backend} needs the optional package {backend!r}, which is not installed "
            f"({INSTALL[backend]}); the results index and every other command work without it"
        ) from None


def export_to(
    backend: str, reg, rows: list[dict], offline: bool = True, training: dict | None = None
) -> str:
    """Log `rows` (evaluation results) and `training` ({RunRef: {column: [(step, value)]}},
    Registry.training's curves) of each run."""
    if backend not in INSTALL:
        raise ValueError(f"unknown tracker {backend!r}; choose wandb or mlflow")
    module = _require(backend)
    runs = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["value"] is not None:
            runs[(r["study"], r["model"])][r["step"]][f"{r['task']}/{r['metric']}"] = r["value"]
    train_keys = set()
    for ref, curves in (training or {}).items():
        for column, points in curves.items():
            # a NaN (diverged loss) too: both trackers take it. A column in two rows of one
            # step (a Trainer's epoch in its train and eval rows) is one value: the later row's
            for step, value in points:
                runs[(ref.study, ref.model)][step][f"train/{column}"] = value
                train_keys.add((ref, step, column))
    for (study, model), steps in sorted(runs.items()):
        out_dir = reg.root / study
        if backend == "wandb":
            # mode= overrides a WANDB_MODE in the environment: what the output says is what
            # happens (an env default of "online" used to upload an "offline" export).
            run = module.init(
                project=study,
                name=model,
                dir=str(out_dir),
                reinit=True,
                config={"study": study, "model": model},
                mode="offline" if offline else "online",
            )
            for step in sorted(steps):
                run.log(steps[step], step=step)
            run.finish()
        else:
            if offline:
                module.set_tracking_uri((out_dir / "mlruns").resolve().as_uri())
            module.set_experiment(study)
            with module.start_run(run_name=model):
                for step in sorted(steps):
                    module.log_metrics(
                        {k.replace(":", "_"): v for k, v in steps[step].items()}, step=step
                    )
    if offline:
        where = "offline files under results/<study>/"
    elif backend == "mlflow":
        where = f"tracking URI {module.get_tracking_uri()}"  # MLFLOW_TRACKING_URI, or ./mlruns
    else:
        where = "the W&B server"
    return (
        f"logged {len(runs)} runs ({len(rows)} values, {len(train_keys)} training values) "
        f"to {backend} ({where})"
    )
