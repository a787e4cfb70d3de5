# Kind-agnostic machinery: config loading and validation, the study matrix, paths, logs,
# resources, the SLURM preflight. Each study kind's own input functions live in its first
# rules file (rules/<kind>.smk); the registry (src/ftlab/kinds.py) says which files those are.
import gc
import sys
from pathlib import Path

# The package lives in src/; it is importable here even when not pip-installed, and jobs
# (local, conda envs, SLURM with its exported environment) find it through PYTHONPATH.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.utils import update_config

from ftlab.paths import export_package_path

export_package_path()

from ftlab.config import ConfigError, read_yaml, validate_config
from ftlab.kinds import get_kind
from ftlab.launch import LaunchError, plan_for, slurm_resources
from ftlab.paths import Layout
from ftlab.signatures import remember_signatures
from ftlab.slurm import report_in_head

DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"


def _load_config():
    """--configfile describes a whole study; without one the embedded default is used.
    --config key=value overrides apply on top either way."""
    try:
        if workflow.overwrite_configfiles:
            # Snakemake has already merged them, keeping the last of two equal keys; read
            # again only to refuse a repeated key rather than lose a setting.
            for path in workflow.overwrite_configfiles:
                read_yaml(path)
            raw = dict(config)
        else:
            raw = read_yaml(DEFAULT_CONFIG)
            update_config(raw, dict(config))
        return validate_config(raw)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


_validated = _load_config()
config.clear()
config.update(_validated)  # scripts see the validated config, defaults included

KIND = get_kind(config["kind"])
STUDY = KIND.matrix(config)
P = Layout(config["study"])
RES = config["resources"]


def check_cluster_caps():
    """The profile's caps (slurm/config.yaml max_mem_mb / max_gpus -> Snakemake's global
    resources) bound every job, and Snakemake silently lowers a request above a cap to the
    cap. Memory: a warning naming the config key. GPUs are the job's shape (its processes,
    its tensor-parallel model; per node x nodes): fewer cannot run it, so that is an error."""
    limits = workflow.global_resources

    def cap(name):
        value = getattr(limits.get(name), "value", limits.get(name))
        return value if isinstance(value, int) else None

    mem_cap, gpu_cap = cap("mem_mb"), cap("gpu")
    for family, res in RES.items():
        if mem_cap is not None and res["mem_mb"] > mem_cap:
            logger.warning(
                f"config resources.{family}.mem_mb = {res['mem_mb']} is above the cluster cap "
                f"{mem_cap} (slurm/config.yaml max_mem_mb): these jobs are submitted with "
                f"{mem_cap}"
            )
        nodes = res.get("nodes", 1)
        asked = res["gpus"] * nodes
        if gpu_cap is not None and asked > gpu_cap:
            key = f"resources.{family}.gpus" + (f" x resources.{family}.nodes" if nodes > 1 else "")
            raise WorkflowError(
                f"config {key} = {asked} GPUs per job is above the cluster cap {gpu_cap} "
                f"(slurm/config.yaml max_gpus): Snakemake would submit the job with "
                f"{gpu_cap}, fewer than it runs on; ask for fewer or raise the cap"
            )


check_cluster_caps()

# Building the DAG of a large study allocates millions of objects that all stay alive, and
# Python's default cyclic-GC thresholds (700, 10, 10) then re-scan them over and over: 11.7 s
# of a 77 s dry run of 100x the paper matrix (27,047 jobs) was GC; with these thresholds
# 5.6 s of 66 s (timed with gc.callbacks, load ~1). Garbage is still collected, less often.
gc.set_threshold(100_000, 50, 100)


wildcard_constraints:
    model=KIND.model_pattern,
    step=r"\d+",
    seed=r"\d+",


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


def _plan(family):
    try:
        return plan_for(family, RES[family], config["threads"])
    except LaunchError as err:
        raise WorkflowError(str(err)) from None


def launch_plan(family):
    """How a job of the family runs its processes (ftlab.launch.Plan), for `params:`.

    Several processes: a dict, which Snakemake records, so a change of the job's shape (it
    changes the float results, and an LLM run's global batch) re-runs the rule. One process:
    the Plan object itself, which Snakemake does not record (not a builtin type), so the
    params of single-process jobs, and whether their existing outputs are up to date, are
    what they were before launch plans existed."""
    plan = _plan(family)
    return plan.to_dict() if plan.launched else plan


def job_shape(family):
    """SLURM resources of the family's jobs besides mem_mb/runtime: gpu (all GPUs of the job),
    nodes, mpi + tasks/tasks_per_node (several tasks), cpus_per_task, and `launcher` (e.g.
    accelerate:ddp:1x8), which dry runs show. See ftlab.launch.slurm_resources."""
    return slurm_resources(_plan(family))


def model_dir(name):
    return P.path("model_dir", model=name)


def saved_checkpoint(wildcards):
    """The checkpoint directory of {model} at {step}; a step the unit never saves is an error
    that names the steps it does save."""
    unit = STUDY.unit(wildcards.model)
    if int(wildcards.step) not in unit.saved_steps:
        raise WorkflowError(
            f"{unit.name} saves checkpoints at steps {list(unit.saved_steps)}, "
            f"not {wildcards.step}"
        )
    return P.path("checkpoint", model=wildcards.model, step=wildcards.step)


# -- executors ------------------------------------------------------------------------
def check_slurm_available():
    """With the SLURM executor, fail before any job is submitted when sbatch is missing, a
    partition/account of the jobs is unknown, or a job asks for more GPUs per node (or nodes)
    than its partition has (the plugin would fail job by job, or the job would pend forever)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    from ftlab.slurm import JobShape, SiteValues, SubmitError, check_shapes, preflight
    from ftlab.slurm import bound_status_interval, run_jobs_in_batch_step

    bound_status_interval(workflow)  # the plugin's back-off notices jobs minutes late
    run_jobs_in_batch_step()  # one Snakemake per job, not two
    site, shapes = SiteValues(), []
    for job in workflow.dag.needrun_jobs():
        if job.resources.get("slurm_partition"):
            site.partitions.add(job.resources["slurm_partition"])
        site.account = job.resources.get("slurm_account") or site.account
        shapes.append(
            JobShape(
                job.rule.name,
                family=job.resources.get("family"),
                partition=job.resources.get("slurm_partition"),
                gpus=int(job.resources.get("gpu") or 0),
                nodes=int(job.resources.get("nodes") or 1),
                site_gpus_per_node=job.resources.get("node_gpus"),
            )
        )
    try:
        preflight(site)
        check_shapes(shapes)
    except SubmitError as err:
        raise WorkflowError(str(err)) from None


onstart:
    check_slurm_available()
