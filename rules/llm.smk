# LLM post-training study (kind: llm): input functions of its rules.
import re

from ftlab.llm.steps import job_plan
from ftlab.llm.study import BASE, TEACHERS, eval_job_spec, teacher_job_spec

TINY_BASE_CHECKPOINT = P.path("checkpoint", model=BASE, step=0)
LLM_TABLES = STUDY.tables(P)


def llm_base_inputs(wildcards=None):
    """The tiny base model is built by the workflow; a hub id / path is used as it is."""
    return [TINY_BASE_CHECKPOINT] if STUDY.tiny_base else []


def llm_teacher_inputs(wildcards):
    return [TINY_BASE_CHECKPOINT] if STUDY.teacher_is_tiny(wildcards.source) else []


def llm_teacher_model(wildcards):
    model = config["llm"][TEACHERS[wildcards.source]]["model"]
    return TINY_BASE_CHECKPOINT if model == "tiny" else model


def llm_preflight_input(wildcards=None):
    """Every GPU job waits for the preflight (llm.preflight), so a missing lm-eval dependency,
    dataset or base model stops the study before any GPU time is spent."""
    return [P.llm_preflight] if config["llm"]["preflight"] else []


def llm_train_data(wildcards):
    run = STUDY.run(wildcards.model)
    if run.method == "grpo":
        return P.path("llm_rows", dataset=run.dataset, split="train")
    return P.path("sft_records", dataset=run.dataset, source=run.records_source)


def llm_model_path(wildcards):
    """What the evaluator loads: the base model, or a published checkpoint of a run."""
    if wildcards.model == BASE:
        if int(wildcards.step) != 0:
            raise WorkflowError(f"the base model is evaluated at step 0, not {wildcards.step}")
        return TINY_BASE_CHECKPOINT if STUDY.tiny_base else config["llm"]["base_model"]
    return saved_checkpoint(wildcards)


def llm_eval_model_input(wildcards):
    """With llm.delete_weights the run's folder changes after its evaluations (weights of
    evaluated checkpoints are deleted): ancient() keeps that from re-running them."""
    if wildcards.model == BASE:
        return llm_base_inputs()
    path = model_dir(wildcards.model)
    return [ancient(path) if config["llm"]["delete_weights"] else path]


def llm_release_weights(wildcards):
    """Whether this evaluation job deletes the checkpoint's weights when done (llm.delete_weights;
    never the base model nor a run's last checkpoint)."""
    if not config["llm"]["delete_weights"] or wildcards.model == BASE:
        return False
    return int(wildcards.step) != STUDY.run(wildcards.model).final_step


def llm_test_rows(wildcards=None):
    return {d: P.path("llm_rows", dataset=d, split="test") for d in STUDY.datasets}


def llm_eval_outputs(kind):
    return STUDY.eval_outputs(P, kind)


def llm_comparisons():
    """vs_base.json of every evaluated checkpoint (the base model is the reference)."""
    return [P.path("lm_eval_vs_base", model=m, step=s) for m, s in STUDY.eval_points() if m != BASE]


# -- job shapes of evaluation and teacher jobs (several GPUs) --------------------------------


def llm_job(family, one_model, key, how="device_map"):
    """(launch, SLURM resources) of an LLM evaluation or teacher job: the family's launch plan
    (one process per GPU, work split by rank), or with one_model a single process that splits
    one model over the job's GPUs (ftlab.llm.steps.job_plan)."""
    try:
        return job_plan(
            family, RES[family], config["threads"], one_model=one_model, key=key, how=how
        )
    except LaunchError as err:
        raise WorkflowError(str(err)) from None


def llm_teacher_job(source):
    """llm.<teacher>.parallel: model (default; vLLM tensor parallel, else HF device_map) or
    data (one process per GPU, shards split by rank; HF generate)."""
    # data with vllm: refused by the config check
    return llm_job("teacher", *teacher_job_spec(config["llm"], TEACHERS[source]))


def llm_teacher_resources():
    """SLURM resources of the teacher jobs, per source (llm.teacher / llm.cf_teacher may place
    their model differently); both share resources.teacher, so their shapes must have the same
    keys (a launched and a one-process job do not)."""
    shapes = {s: llm_teacher_job(s)[1] for s in STUDY.teacher_sources()}
    keys = {tuple(sorted(shape)) for shape in shapes.values()}
    if len(keys) > 1:
        raise WorkflowError(
            "config keys 'llm.teacher.parallel' and 'llm.cf_teacher.parallel' give the teacher "
            f"jobs different shapes ({shapes}) from one resources.teacher section: set both to "
            "the same value"
        )
    return {k: (lambda wc, k=k: shapes[wc.source][k]) for k in (keys.pop() if keys else ())}


# lm_eval.parallel model and the vllm backend: one process, the model over the job's GPUs
LLM_EVAL_JOB = llm_job("evaluate", *eval_job_spec(config["llm"]))
