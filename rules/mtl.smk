# Multi-task study (kind: mtl): wildcards and input functions of its rules.
# Early stopping decides at run time which checkpoints a run keeps: training is a Snakemake
# `checkpoint` whose model folder holds mtl_manifest.json, and the input functions below read
# it, so evaluation of every kept checkpoint (and only those) follows training automatically.
from functools import cache

from ftlab.io import read_json
from ftlab.mtl import settings as mtl_settings
from ftlab.mtl.study import training_tasks, world_data_tasks

MTL = config["mtl"]
MTL_WORLD = MTL["objective"] == "world"
MTL_TASKS = training_tasks(MTL)
MTL_SPLIT_TASKS = world_data_tasks(MTL) if MTL_WORLD else []
MTL_REPORT = STUDY.report_outputs(P)
# mtl.base_model "tiny": a small random causal LM the workflow builds (CPU tests)
MTL_TINY_BASE = P.path("checkpoint", model="base", step=0)
MTL_TINY = not MTL_WORLD and MTL["base_model"] == "tiny"


wildcard_constraints:
    task=r"[A-Za-z0-9_]+",


def mtl_world_split(task, split):
    return P.path("task_split", task=task, variant="no_atlantis", split=split)


def mtl_source_rows(wildcards=None):
    """Per-task training sources of the mix, in training-task order."""
    if MTL_WORLD:
        return [mtl_world_split(t, "train") for t in MTL_TASKS]
    return [P.path("mtl_task_rows", task=t) for t in MTL_TASKS]


def mtl_base_inputs(wildcards=None):
    return [MTL_TINY_BASE] if MTL_TINY else []


@cache
def mtl_test_sets(wildcards=None):
    """world: test split per suite task; mtl.eval.engine guru: each task's offline_eval parquet
    (inputs, so new data re-runs evaluation; a task without one fails the job naming it, and
    `ftlab validate` says so first); lm-eval: it owns its data (none here)."""
    suite = [t for ts in MTL["eval"]["suite"].values() for t in ts]
    if not MTL_WORLD and MTL["eval"]["engine"] == "guru":
        from ftlab.mtl.guru_eval import find_task_files

        return find_task_files(MTL["eval"]["guru"]["data_folder"], suite)[0]
    if not MTL_WORLD:
        return {}
    return {t: mtl_world_split(t, "test") for t in suite}


def mtl_manifest(model):
    """The run's manifest, once its training checkpoint rule has run (else Snakemake
    re-evaluates the DAG after it)."""
    out = checkpoints.mtl_train.get(model=model).output.model
    return read_json(f"{out}/mtl_manifest.json")


def mtl_kept_steps(model):
    return [c["step"] for c in mtl_manifest(model)["checkpoints"]]


def mtl_kept(kind):
    def paths(wildcards=None):
        return [P.path(kind, model=m, step=s) for m in STUDY.runs for s in mtl_kept_steps(m)]

    return paths


def mtl_eval_checkpoint(wildcards):
    """A kept checkpoint of {model}; any other step is an error naming the kept ones."""
    kept = mtl_kept_steps(wildcards.model)
    if int(wildcards.step) not in kept:
        raise WorkflowError(
            f"{wildcards.model} kept checkpoints at steps {kept} (early stopping, keep_last), "
            f"not {wildcards.step}"
        )
    return P.path("checkpoint", model=wildcards.model, step=wildcards.step)


# `rule all` asks for every kept checkpoint's evaluation directly, so one deleted is rebuilt.
STUDY.add_dynamic_targets(mtl_kept("mtl_eval"))
