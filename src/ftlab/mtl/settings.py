"""What each rule of a multi-task study takes from the config: one function per rule.

As ftlab.world.settings: the rule records the result as `params` (a changed setting re-runs
it) and its script passes exactly these values to the stage function in ftlab.mtl.steps.
"""

from __future__ import annotations

from ftlab.mtl.study import MTLStudy, task_domains, training_tasks
from ftlab.world import settings as world_settings


def _world_cfg(cfg: dict) -> dict:
    """The world-model view of mtl.world (the world settings functions read `data`)."""
    return {"data": cfg["mtl"]["world"]["data"]}


def cities(cfg: dict) -> dict:
    return world_settings.cities(_world_cfg(cfg))


def task_split(cfg: dict, task: str) -> dict:
    """A geometry task's no_atlantis split: training + validation rows for a trained task
    (validation rows are the tail of the train split), test rows for every task."""
    mtl, d = cfg["mtl"], cfg["mtl"]["world"]["data"]
    trained = task in training_tasks(mtl)
    n_train = d["pretrain_rows_per_task"] + mtl["validation"]["rows_per_task"] if trained else 0
    return {
        "n_train": n_train,
        "n_test": d["test_rows_per_set"],
        "seed": d["seed"],
        "task_options": {"inside_sampler": d["inside_sampler"]},
        "split_overlap": d["split_overlap"],
    }


def mix(cfg: dict) -> dict:
    mtl = cfg["mtl"]
    n_train = (
        mtl["world"]["data"]["pretrain_rows_per_task"] if mtl["objective"] == "world" else None
    )
    return {
        "tasks": training_tasks(mtl),
        "n_train": n_train,
        "n_validation": mtl["validation"]["rows_per_task"],
        "seed": (mtl["world"]["data"]["seed"] if mtl["objective"] == "world" else cfg["seeds"][0]),
    }


def dataset(cfg: dict, task: str) -> dict:
    return {"spec": dict(cfg["mtl"]["datasets"][task]), "seed": 0}


def training(
    cfg: dict, run: str, study: MTLStudy | None = None, tiny_base: str | None = None
) -> dict:
    """tiny_base: where the workflow builds the tiny model (mtl.base_model: tiny)."""
    mtl = cfg["mtl"]
    spec = (study or MTLStudy(cfg)).unit(run)
    settings = {
        "objective": mtl["objective"],
        "model_name": run,
        "tasks": training_tasks(mtl),
        "method": spec.method,
        # the baseline's own key: seed 000 pairs PCGrad (mean) with the plain loss (sum)
        "reduction": mtl["baseline_reduction" if spec.method == "baseline" else "reduction"],
        "training": dict(mtl["training"]),
        "validation": {
            k: mtl["validation"][k]
            for k in ("every_epochs", "before_training", "metric", "batch_size")
        },  # fmt: skip
        "early_stopping": dict(mtl["early_stopping"]),
        "checkpoints": dict(mtl["checkpoints"]),
        "seed": spec.seed,
        "device": cfg["device"],
        "meta": {"study": cfg["study"], "method": spec.method, "seed": spec.seed},
    }
    if mtl["objective"] == "world":
        settings["model_cfg"] = dict(mtl["world"]["model"])
    else:
        settings["base_model"] = tiny_base if mtl["base_model"] == "tiny" else mtl["base_model"]
        for k in ("max_new_tokens", "temperature", "top_p"):
            settings["validation"][k] = mtl["validation"][k]
        # the run's own task_loss, as reduction: seed 000's baseline trains the plain loss
        trl = dict(mtl["trl"])
        baseline_task_loss = trl.pop("baseline_task_loss")
        if spec.method == "baseline":
            trl["task_loss"] = baseline_task_loss
        if mtl["objective"] == "sft":  # GRPO's setting: out of SFT's params (no rerun on edit)
            del trl["task_loss"]
        settings["trl"] = trl
        settings["formats"] = {t: mtl["datasets"][t]["format"] for t in training_tasks(mtl)}
    return settings


def evaluation(cfg: dict, run: str, step: int) -> dict:
    mtl = cfg["mtl"]
    e = mtl["eval"]
    common = {
        "objective": mtl["objective"],
        "suite": task_domains(e["suite"]),
        "meta": {"model": run, "step": int(step), "study": cfg["study"]},
    }
    if mtl["objective"] == "world":
        return {**common, "rows_per_task": e["rows_per_task"], "batch_size": e["batch_size"],
                "device": cfg["device"]}  # fmt: skip
    if e["engine"] == "guru":
        from ftlab.mtl.guru_eval import task_plan

        # score_workers only spreads the same scoring over processes: out of the params (a
        # change re-scores nothing); the job script reads it from the config
        guru = {k: v for k, v in e["guru"].items() if k != "score_workers"}
        # the registry's per-task settings too: a change there re-runs evaluation
        plan = task_plan(common["suite"], guru["max_response_tokens"])
        return {**common, "engine": "guru", "guru": guru, "plan": plan, "device": cfg["device"],
                "gpus": max(1, cfg["resources"]["evaluate"].get("gpus") or 1)}  # fmt: skip
    # lm_eval (no "engine" key: the params of existing studies stay as they were)
    return {**common, "metrics": dict(e["metrics"]), "lm_eval": dict(e["lm_eval"])}


def report(cfg: dict, study: MTLStudy | None = None) -> dict:
    study = study or MTLStudy(cfg)
    mtl = cfg["mtl"]
    return {
        "runs": {n: {"method": r.method, "seed": r.seed} for n, r in study.runs.items()},
        "domains": {d: list(ts) for d, ts in mtl["eval"]["suite"].items()},
        "validation_metric": mtl["validation"]["metric"],
        "study": cfg["study"],
        **mtl["report"],
    }


def evaluation_job(params: dict, cfg: dict) -> dict:
    """The evaluation job's keyword arguments: its params (`evaluation`) plus the settings that
    change how, not what, it computes - kept out of the params, so a change re-runs nothing
    (guru: score_workers)."""
    job = dict(params)
    if job.get("engine") == "guru":
        workers = cfg["mtl"]["eval"]["guru"].get("score_workers")
        job["guru"] = {**job["guru"], "score_workers": workers}
    return job
