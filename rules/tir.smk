# Tool-integrated reasoning study (kind: tir): wildcard constraints and input functions.
from ftlab.llm.steps import job_plan
from ftlab.tir.study import BASE, SEP, prompt_template as tir_prompt_template

TIR = config["tir"]
TIR_TINY_BASE = P.path("checkpoint", model=BASE, step=0)
# Evaluation generation, tir.eval.parallel: model (default) - one process, one model over the
# job's GPUs (vLLM tensor parallelism, HF device_map; the SLURM shape shows vllm_tp:N /
# device_map:N); data - one process per GPU (or resources.evaluate.processes on CPU) through
# ftlab.launch, each rank generating its shards of the problems (launcher accelerate:ddp:MxN).
try:
    TIR_EVAL_JOB = job_plan(
        "evaluate", RES["evaluate"], config["threads"],
        one_model=TIR["eval"]["parallel"] == "model", key="tir.eval.parallel: model",
        how={"vllm": "vllm_tp", "hf": "device_map"}.get(
            TIR["eval"]["backend"], "vllm_tp-or-device_map"
        ),
    )  # fmt: skip
except LaunchError as err:
    raise WorkflowError(str(err)) from None


wildcard_constraints:
    eval_set=r"[A-Za-z0-9][A-Za-z0-9-]*__[A-Za-z0-9][A-Za-z0-9-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9-]*",


def tir_base_model():
    return TIR_TINY_BASE if STUDY.tiny_base else TIR["base_model"]


def tir_base_inputs(wildcards=None):
    """The tiny base is built by the workflow; a hub id or path is used as it is."""
    return [TIR_TINY_BASE] if STUDY.tiny_base else []


def tir_split(wildcards):
    dataset, sampling = wildcards.eval_set.split(SEP)
    if dataset not in TIR["eval"]["datasets"] or sampling not in TIR["eval"]["samplings"]:
        raise WorkflowError(
            f"evaluation set {wildcards.eval_set!r} is not <dataset>__<sampling> of "
            f"tir.eval.datasets {TIR['eval']['datasets']} and tir.eval.samplings "
            f"{list(TIR['eval']['samplings'])}"
        )
    return dataset, sampling


def tir_eval_rows(wildcards):
    return P.path("tir_rows", dataset=tir_split(wildcards)[0])


def tir_sampling(wildcards):
    return TIR["eval"]["samplings"][tir_split(wildcards)[1]]


def tir_model_path(wildcards):
    """What the generator loads: the base model, a val-only model, or a run's checkpoint."""
    if wildcards.model == BASE or wildcards.model in STUDY.val_models:
        if int(wildcards.step) != 0:
            raise WorkflowError(f"{wildcards.model} is evaluated at step 0, not {wildcards.step}")
        if wildcards.model == BASE:
            return tir_base_model()
        return STUDY.val_models[wildcards.model]
    return saved_checkpoint(wildcards)


def tir_model_input(wildcards):
    if wildcards.model == BASE:
        return tir_base_inputs()
    if wildcards.model in STUDY.val_models:
        return []
    return [model_dir(wildcards.model)]


def tir_score_files(wildcards=None):
    return {
        f"{m}|{s}|{e}": P.path("tir_scores", model=m, step=s, eval_set=e)
        for m, s, e in STUDY.eval_jobs()
    }
