# World-model study (kind: worldmodel): wildcards and input functions of its rules.
from ftlab.paths import split_eval_set
from ftlab.world import settings as world_settings
from ftlab.study import MULTITASK, TASKS, VARIANTS, mixture_tasks


wildcard_constraints:
    mixture=r"ftwb[12]-\d+",
    variant="|".join(VARIANTS),
    split="train|test",
    eval_set=r"[a-z]+__[a-z_]+",


EVAL_SETS = STUDY.eval_sets()


# -- data -----------------------------------------------------------------------------
def split_path(task, variant, split):
    return P.path("task_split", task=task, variant=variant, split=split)


def mixture_inputs(wildcards):
    trained = mixture_trained_tasks(wildcards.mixture)
    return {
        "no_atlantis": [split_path(t, "no_atlantis", "train") for t in trained],
        "atlantis": [split_path(t, "atlantis_required", "train") for t in STUDY.tasks],
    }


def mixture_trained_tasks(mixture):
    if mixture not in STUDY.mixtures():
        raise WorkflowError(f"mixture {mixture!r} is not configured in 'finetunes'")
    return mixture_tasks(mixture)


# -- models ---------------------------------------------------------------------------
def train_inputs(wildcards):
    spec = STUDY.model(wildcards.model)
    if spec.mixture is None:
        return {"rows": split_path(MULTITASK, "no_atlantis", "train")}
    return {"rows": P.path("mixture", mixture=spec.mixture), "init": model_dir(spec.init_from)}


def init_checkpoint(wildcards):
    spec = STUDY.model(wildcards.model)
    if spec.init_from is None:
        return None
    base = STUDY.model(spec.init_from)
    return P.path("checkpoint", model=base.name, step=base.final_step)


# -- evaluation -----------------------------------------------------------------------
def eval_set_inputs(wildcards=None):
    return [split_path(*split_eval_set(s), "test") for s in EVAL_SETS]


def eval_outputs(model):
    """The metrics file of each evaluation job of a model (every eval set in one file)."""
    return STUDY.eval_outputs(P, model)


def probe_output(model):
    return STUDY.probe_output(P, model)


def plot_eval_inputs(*kinds):
    def inputs(wildcards):
        seed = int(wildcards.seed)
        if seed not in config["seeds"]:  # else an empty placeholder plot is "built"
            raise WorkflowError(
                f"plot target for seed {seed}: the study's seeds are {config['seeds']} "
                "(config key 'seeds')"
            )
        models = STUDY.models_of(seed)
        return [path for m in models if m.kind in ("base", *kinds) for path in eval_outputs(m.name)]

    return inputs
