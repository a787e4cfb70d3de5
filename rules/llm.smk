# LLM post-training study (kind: llm): input functions of its rules.
from ftlab.llm.study import BASE

TINY_BASE_CHECKPOINT = P.path("checkpoint", model=BASE, step=0)
LLM_TABLES = STUDY.tables(P)


def llm_base_inputs(wildcards=None):
    """The tiny base model is built by the workflow; a hub id / path is used as it is."""
    return [TINY_BASE_CHECKPOINT] if STUDY.tiny_base else []


def llm_teacher_inputs(wildcards=None):
    return [TINY_BASE_CHECKPOINT] if STUDY.teacher_is_tiny else []


def llm_train_data(wildcards):
    run = STUDY.run(wildcards.model)
    if run.method == "grpo":
        return P.path("llm_rows", dataset=run.dataset, split="train")
    source = "gt" if run.method == "gt_sft" else "teacher"
    return P.path("sft_records", dataset=run.dataset, source=source)


def llm_model_path(wildcards):
    """What the evaluator loads: the base model, or a published checkpoint of a run."""
    if wildcards.model == BASE:
        if int(wildcards.step) != 0:
            raise WorkflowError(f"the base model is evaluated at step 0, not {wildcards.step}")
        return TINY_BASE_CHECKPOINT if STUDY.tiny_base else config["llm"]["base_model"]
    return saved_checkpoint(wildcards)


def llm_eval_model_input(wildcards):
    if wildcards.model == BASE:
        return llm_base_inputs()
    return [model_dir(wildcards.model)]


def llm_test_rows(wildcards=None):
    return {d: P.path("llm_rows", dataset=d, split="test") for d in STUDY.datasets}


def llm_eval_outputs(kind):
    return STUDY.eval_outputs(P, kind)
