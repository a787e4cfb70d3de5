# Config loading/validation, the study matrix and every input function.
import shutil
import sys
from pathlib import Path

import yaml

# The package lives in src/; it is importable here even when not pip-installed, and jobs
# (local, conda envs, SLURM with its exported environment) find it through PYTHONPATH.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.utils import update_config

from ftlab.paths import export_package_path

export_package_path()

from ftlab.config import ConfigError, validate_config
from ftlab.paths import Layout
from ftlab.paths import split_eval_set
from ftlab.steps import split_sizes
from ftlab.study import MULTITASK, TASKS, VARIANTS, Study, mixture_tasks
from ftlab.llm.study import BASE, LLMStudy

DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"


def _load_config():
    """--configfile describes a whole study; without one the embedded default is used.
    --config key=value overrides apply on top either way."""
    if workflow.overwrite_configfiles:
        raw = dict(config)
    else:
        raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
        update_config(raw, dict(config))
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


_validated = _load_config()
config.clear()
config.update(_validated)  # scripts see the validated config, defaults included

IS_LLM = config["kind"] == "llm"
STUDY = LLMStudy(config) if IS_LLM else Study(config)
P = Layout(config["study"])
MODEL_PATTERN = (
    r"base|(gt_sft|teacher_sft|grpo)-[A-Za-z0-9]+_seed\d+"
    if IS_LLM
    else r"(base|ftwb1-\d+|ftwb2-\d+)_seed\d+"
)
RES = config["resources"]


wildcard_constraints:
    model=MODEL_PATTERN,
    step=r"\d+",
    seed=r"\d+",
    mixture=r"ftwb[12]-\d+",
    variant="|".join(VARIANTS),
    split="train|test",
    eval_set=r"[a-z]+__[a-z_]+",


MIXTURE_SIZE_KEYS = ("finetune_no_atlantis_rows", "finetune_atlantis_rows", "elicitation_rows")


def training_recipe(wildcards):
    """Everything that determines a model's weights, recorded so that a change re-trains it."""
    spec = STUDY.model(wildcards.model)
    return {
        "model": config["model"],
        "training": spec.training,
        "steps": list(spec.saved_steps),
        "seed": spec.seed,
    }


def log_path(rule_name, *parts):
    return P.path("log", job="/".join([rule_name, *parts]))


def benchmark_path(rule_name, *parts):
    return P.path("benchmark", job="/".join([rule_name, *parts]))


def scaled(family, key):
    """Resource that grows with the attempt, so a job killed for time/memory retries bigger."""
    base = RES[family][key]
    return lambda wildcards, attempt: base * attempt


def gpus(family):
    """GPUs per job of a rule family (config resources.<family>.gpus; 0 = CPU only). The SLURM
    plugin turns gpu > 0 into --gpus=N (--gpus=<model>:N with the profile's gpu_model)."""
    return RES[family]["gpus"]


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
def model_dir(name):
    return P.path("model_dir", model=name)


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
EVAL_SETS = [] if IS_LLM else STUDY.eval_sets()


def eval_set_inputs(wildcards=None):
    return [split_path(*split_eval_set(s), "test") for s in EVAL_SETS]


def checked_step(wildcards):
    spec = STUDY.model(wildcards.model)
    if int(wildcards.step) not in spec.saved_steps:
        raise WorkflowError(
            f"{wildcards.model} saves checkpoints at steps {list(spec.saved_steps)}, "
            f"not {wildcards.step}"
        )
    return P.path("checkpoint", model=wildcards.model, step=wildcards.step)


def eval_outputs(model):
    spec = STUDY.model(model)
    return [
        P.path("eval_metrics", model=model, step=step, eval_set=s)
        for step in spec.eval_steps
        for s in EVAL_SETS
    ]


def probe_output(model):
    spec = STUDY.model(model)
    return P.path("probe", model=model, step=spec.final_step)


def models_of(seed, *kinds):
    return [m.name for m in STUDY.models.values() if m.seed == int(seed) and m.kind in kinds]


def plot_eval_inputs(*kinds):
    def inputs(wildcards):
        models = models_of(wildcards.seed, "base", *kinds)
        return [path for m in models for path in eval_outputs(m)]

    return inputs


# -- targets --------------------------------------------------------------------------
def plot_targets():
    plots = []
    for seed in STUDY.seeds:
        if models_of(seed, "ftwb1"):
            plots.append(f"seed{seed}_ftwb1_heatmap")
        if models_of(seed, "ftwb2"):
            plots += [f"seed{seed}_ftwb2_heatmap", f"seed{seed}_ftwb2_actual_minus_expected"]
    plots.append("probes")
    return [P.path("plot", plot=p) for p in plots]


def all_targets():
    if IS_LLM:
        return llm_targets()
    # Per-model outputs are requested directly so a deleted model/eval/probe is rebuilt
    # even while the aggregate tables downstream of it still exist.
    targets = [model_dir(m) for m in STUDY.models]
    for m in STUDY.models:
        targets += eval_outputs(m)
        targets.append(probe_output(m))
    targets += [P.metrics_table, P.normalized_table, P.probes_table, P.summary_table]
    return targets + plot_targets()


# -- executors ------------------------------------------------------------------------
def check_slurm_available():
    """With the SLURM executor, fail before any job is submitted when sbatch is missing or a
    partition/account of the jobs is unknown (the plugin would fail job by job, and retry)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    from ftlab.slurm import SiteValues, SubmitError, preflight

    site = SiteValues()
    for job in workflow.dag.needrun_jobs():
        if job.resources.get("slurm_partition"):
            site.partitions.add(job.resources["slurm_partition"])
        site.account = job.resources.get("slurm_account") or site.account
    try:
        preflight(site)
    except SubmitError as err:
        raise WorkflowError(str(err)) from None


onstart:
    check_slurm_available()


# -- LLM studies (kind: llm) ----------------------------------------------------------
TINY_BASE_CHECKPOINT = P.path("checkpoint", model=BASE, step=0)


def llm_base_inputs(wildcards=None):
    """The tiny base model is built by the workflow; a hub id / path is used as it is."""
    return [TINY_BASE_CHECKPOINT] if IS_LLM and STUDY.tiny_base else []


def llm_teacher_inputs(wildcards=None):
    return [TINY_BASE_CHECKPOINT] if config["llm"]["teacher"]["model"] == "tiny" else []


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
    run = STUDY.run(wildcards.model)
    if int(wildcards.step) not in run.saved_steps:
        raise WorkflowError(
            f"{run.name} saves checkpoints at steps {list(run.saved_steps)}, not {wildcards.step}"
        )
    return P.path("checkpoint", model=run.name, step=wildcards.step)


def llm_eval_model_input(wildcards):
    if wildcards.model == BASE:
        return llm_base_inputs()
    return [model_dir(wildcards.model)]


def llm_test_rows(wildcards=None):
    return {d: P.path("llm_rows", dataset=d, split="test") for d in STUDY.datasets}


def llm_eval_outputs(kind):
    return [P.path(kind, model=m, step=s) for m, s in STUDY.eval_points()]


LLM_TABLES = {
    "forgetting": P.forgetting_table,
    "summary": P.forgetting_summary,
    "in_domain": P.in_domain_table,
}


def llm_plot_targets():
    plots = ["forgetting_summary"]
    for dataset in STUDY.datasets:
        plots += [f"forgetting_{dataset}", f"in_domain_{dataset}"]
    return [P.path("plot", plot=p) for p in plots]


def llm_targets():
    targets = [model_dir(run) for run in STUDY.runs]
    targets += llm_eval_outputs("lm_eval_metrics") + llm_eval_outputs("in_domain_metrics")
    if STUDY.needs_teacher():
        targets += [P.path("teacher_report", dataset=d) for d in STUDY.datasets]
    return targets + list(LLM_TABLES.values()) + llm_plot_targets()
