"""`ftlab submit`: put the Snakemake head process itself on a SLURM cluster.

Some clusters forbid long processes on login nodes; the head process only submits and polls,
so it runs as one long, small job (1 CPU, ~1 GB) that runs `snakemake --profile slurm ARGS`
from the repository root and submits the workflow's jobs from there.

Before submitting, the site values of the profile (account, partitions, QOS) are checked
against the cluster so a typo fails here, naming the value and the file to fix, rather than
after the head job has waited in the queue.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class SubmitError(Exception):
    """A preflight check failed; the message says what to change and where."""


@dataclass
class SiteValues:
    """What the profile passes to sbatch for the cluster's bookkeeping."""

    account: str | None = None
    partition: str | None = None  # default partition of the workflow's jobs
    partitions: set[str] = field(default_factory=set)  # every partition any rule asks for
    qos: str | None = None


def find_profile(name: str, cwd: Path) -> Path:
    """Where Snakemake looks a profile up: a path, ./<name>, then the user's config dirs."""
    candidates = [cwd / name]
    if "/" not in name:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
        candidates += [config_home / "snakemake" / name, Path("/etc/xdg/snakemake") / name]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise SubmitError(
        f"profile {name!r} not found (looked for config.yaml in "
        + ", ".join(str(p) for p in candidates)
        + "); run from the repository root, where slurm/config.yaml is"
    )


def read_profile(profile: Path) -> dict:
    """The profile as Snakemake sees it (it may be a YTE template, as slurm/config.yaml is)."""
    import yte

    text = (profile / "config.yaml").read_text()
    return yte.process_yaml(io.StringIO(text), require_use_yte=True) or {}


def _unquote(value):
    """Profile resources are Python expressions: "'gpu'" and "gpu" both mean gpu."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def site_values(profile_cfg: dict) -> SiteValues:
    defaults = profile_cfg.get("default-resources") or {}
    site = SiteValues(
        account=_unquote(defaults.get("slurm_account")),
        partition=_unquote(defaults.get("slurm_partition")),
        qos=profile_cfg.get("slurm-qos"),
    )
    if site.partition:
        site.partitions.add(site.partition)
    for resources in (profile_cfg.get("set-resources") or {}).values():
        if resources and resources.get("slurm_partition"):
            site.partitions.add(_unquote(resources["slurm_partition"]))
    return site


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


PROFILE_HINT = "slurm/config.yaml (SITE SETTINGS block)"


def preflight(site: SiteValues, where: str = PROFILE_HINT) -> None:
    """sbatch present, partitions known to sinfo, account associated with this user.
    `where` tells the user where these values are set. Also called by the workflow's onstart."""
    if shutil.which("sbatch") is None:
        raise SubmitError(
            "SLURM requested but sbatch not found on PATH. Run this on a SLURM login node "
            "(or load your site's slurm module); without SLURM run the workflow locally: "
            "snakemake --cores all"
        )
    for partition in sorted(site.partitions):
        out = _run(["sinfo", "-h", "-p", partition, "-o", "%P"])
        if out.returncode != 0 or not out.stdout.strip():
            known = _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
            raise SubmitError(
                f"partition {partition!r} is not known to this cluster "
                f"(sinfo lists: {', '.join(known) or 'nothing'}); set the partition in {where}"
            )
    if site.account and shutil.which("sacctmgr"):
        user = getpass.getuser()
        out = _run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}",
                    f"account={site.account}", "format=account"])  # fmt: skip
        # A failing sacctmgr means no accounting database: nothing to check against.
        if out.returncode == 0 and not out.stdout.strip():
            raise SubmitError(
                f"account {site.account!r} has no association with user {user!r} "
                f"(sacctmgr -n show assoc user={user}); set the account in {where}"
            )


@dataclass(frozen=True)
class JobShape:
    """What one job asks of a node: its rule, the config section that sets it, where it runs."""

    rule: str
    family: str | None  # resources.<family> of the study config
    partition: str | None
    gpus: int  # all GPUs of the job
    nodes: int = 1
    site_gpus_per_node: int | None = None  # the profile's SITE SETTINGS gpus_per_node


_GPU_GRES = re.compile(r"gpu(?::[^:,()\s]+)?:(\d+)")


def partition_shape(partition: str | None) -> tuple[int, int] | None:
    """(GPUs of its largest node, nodes) of a partition from sinfo (the default partition
    when None), or None when sinfo cannot tell."""
    cmd = ["sinfo", "-h", "-o", "%P|%G|%D"] + (["-p", partition] if partition else [])
    out = _run(cmd)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    gpus, nodes = 0, 0
    for line in out.stdout.splitlines():
        name, gres, count = (line.split("|") + ["", ""])[:3]
        if partition is None and not name.endswith("*"):  # sinfo marks the default with *
            continue
        gpus = max([gpus, *(int(n) for n in _GPU_GRES.findall(gres))])
        nodes += int(count) if count.strip().isdigit() else 0  # one row per node state
    return gpus, nodes


def check_shapes(jobs: list[JobShape], where: str = PROFILE_HINT) -> None:
    """Refuse jobs that no node of their partition can hold: more GPUs per node than its
    nodes have (the site block's gpus_per_node, else what sinfo reports), or more nodes than
    the partition has. Each message names the rule, the config key and the partition."""
    seen = set()
    for job in jobs:
        if job in seen or (job.gpus == 0 and job.nodes == 1):
            continue
        seen.add(job)
        key = f"resources.{job.family}" if job.family else "resources"
        part = f"partition {job.partition!r}" if job.partition else "the default partition"
        per_node = -(-job.gpus // job.nodes)
        shape = partition_shape(job.partition) if shutil.which("sinfo") else None
        limit = job.site_gpus_per_node if job.site_gpus_per_node is not None else (
            shape[0] if shape else None
        )  # fmt: skip
        source = "gpus_per_node in " + where if job.site_gpus_per_node is not None else "sinfo"
        if limit is not None and per_node > limit:
            raise SubmitError(
                f"rule {job.rule}: {per_node} GPUs per node (config key '{key}.gpus'), but "
                f"the nodes of {part} have {limit} ({source}); ask for at most {limit} per node "
                f"(and more nodes: '{key}.nodes') or use another partition"
            )
        if shape and shape[1] and job.nodes > shape[1]:
            raise SubmitError(
                f"rule {job.rule}: {job.nodes} nodes (config key '{key}.nodes'), but {part} "
                f"has {shape[1]} (sinfo)"
            )


def sbatch_command(args, site: SiteValues, log_path: Path) -> list[str]:
    snakemake = ["snakemake", "--profile", args.profile, *args.snakemake_args]
    cmd = [
        "sbatch", "--parsable", "--job-name", args.job_name,
        "--ntasks=1", "--cpus-per-task=1", f"--mem={args.mem}", f"--time={args.time}",
        f"--output={log_path}", f"--chdir={args.repo}", "--export=ALL",
    ]  # fmt: skip
    if site.account:
        cmd.append(f"--account={site.account}")
    if site.partition:
        cmd.append(f"--partition={site.partition}")
    if site.qos:
        cmd.append(f"--qos={site.qos}")
    # scancel (or the time limit) sends SIGTERM, on which Snakemake only stops submitting and
    # waits for its running jobs (hours); on SIGINT it scancels them. The batch shell forwards
    # TERM as INT; `exec-default-sigint` undoes the SIGINT-ignore of background jobs in sh.
    head = [sys.executable, "-m", "ftlab.slurm", "exec-default-sigint", *snakemake]
    script = (
        f"{shlex.join(head)} & pid=$!; trap 'kill -INT $pid 2>/dev/null; wait $pid' TERM; wait $pid"
    )
    return cmd + ["--wrap", script]


def configfiles_in(snakemake_args: list[str]) -> list[str]:
    """The files of `--configfile(s) A [B ...]` / `--configfile=A` among Snakemake's args."""
    files, taking = [], False
    for arg in snakemake_args:
        name, eq, value = arg.partition("=")
        if name in ("--configfile", "--configfiles"):
            taking = not eq
            if eq:
                files.append(value)
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def check_study_config(snakemake_args: list[str], repo: Path) -> None:
    """The study config the head job would run, validated here: a bad file or key is an
    error now, not in the head job's log once it leaves the queue."""
    from snakemake.utils import update_config

    from ftlab.config import ConfigError, read_yaml, validate_config

    files = configfiles_in(snakemake_args) or [str(repo / "config" / "config.yaml")]
    merged: dict = {}
    try:
        for name in files:  # merged in order, as Snakemake does; a later file may be partial
            path = Path(name) if Path(name).is_absolute() else repo / name  # the job's --chdir
            update_config(merged, read_yaml(path))
        validate_config(merged)
    except ConfigError as err:
        raise SubmitError(f"{' + '.join(files)}: {err}") from None


def submit(args) -> int:
    repo = Path(args.repo).resolve()
    args.repo = str(repo)
    check_study_config(args.snakemake_args, repo)
    profile = find_profile(args.profile, repo)
    site = site_values(read_profile(profile))
    preflight(site, f"{profile / 'config.yaml'} (SITE SETTINGS block)")
    log_dir = Path(args.log_dir)
    log_dir = (log_dir if log_dir.is_absolute() else repo / log_dir).resolve()
    cmd = sbatch_command(args, site, log_dir / f"{args.job_name}-%j.log")
    # The head job inherits this environment (--export=ALL): the venv's snakemake comes first.
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch does not create it
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SubmitError(
            f"sbatch rejected the head job: {out.stderr.strip() or out.stdout.strip()}\n"
            f"  account={site.account!r} partition={site.partition!r} qos={site.qos!r} "
            f"time={args.time!r}: account/partition/qos are set in "
            f"{profile / 'config.yaml'} (SITE SETTINGS), the time limit with --time"
        )
    job_id = out.stdout.strip().split(";")[0]
    print(f"submitted the Snakemake head process as SLURM job {job_id}")
    print(f"log: {log_dir / f'{args.job_name}-{job_id}.log'}")
    print(f"follow it with: tail -f {log_dir / f'{args.job_name}-{job_id}.log'}; "
          f"stop it (and its jobs) with: scancel {job_id}")  # fmt: skip
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="run the Snakemake head process as a SLURM job",
        description="sbatch `snakemake --profile PROFILE ARGS` from the repository root as one "
        "long, 1-CPU job and print its job id and log path. Snakemake arguments go after --.",
    )
    p.add_argument("--profile", default="slurm", help="profile name or dir (default: slurm)")
    p.add_argument("--log-dir", default=".snakemake/slurm_logs/head",
                   help="where the head job's log goes (relative to the repo root; default: "
                   "next to the plugin's per-job logs)")  # fmt: skip
    p.add_argument("--time", default="7-00:00:00", help="head job time limit (sbatch --time)")
    p.add_argument("--mem", default="1000M",
                   help="head job memory (sbatch --mem); the head also runs the report's tables "
                   "and plots (~220 MB each in the tiny study)")  # fmt: skip
    p.add_argument("--job-name", default="ftlab-head")
    p.add_argument("--repo", default=str(REPO), help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command only")
    p.add_argument("snakemake_args", nargs="*", help="arguments for snakemake (after --)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    try:
        return submit(args)
    except SubmitError as err:
        print(f"ftlab submit: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__" and sys.argv[1:2] == ["exec-default-sigint"]:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # survives exec; SIG_IGN would too
    os.execvp(sys.argv[2], sys.argv[2:])


def bound_status_interval(workflow) -> float | None:
    """Wait at most ``seconds-between-status-checks`` between two SLURM status checks.

    The SLURM plugin (2.8) ignores that setting after its first check: each check that finds
    no job finished adds 10 s to the wait (up to 180 s), and a job that ends just after a
    check is noticed up to a few minutes late. That delay is paid at every step of a study's
    critical path (data, base training, fine-tunes, evaluations, tables), which made the tiny
    study 3.8x slower under the local SLURM than locally. The plugin's own back-off is kept
    below the cap; the checks stay one squeue/sacct call for all jobs, limited by
    ``max-status-checks-per-second``. Returns the cap (None: nothing changed)."""
    try:
        from snakemake_executor_plugin_slurm import Executor
    except ImportError:
        return None
    cap = workflow.remote_execution_settings.seconds_between_status_checks
    if not cap or getattr(Executor.check_active_jobs, "ftlab_cap", None) == cap:
        return None
    original = getattr(Executor.check_active_jobs, "ftlab_original", Executor.check_active_jobs)

    async def check_active_jobs(self, active_jobs):
        async for job_info in original(self, active_jobs):
            yield job_info
        wait = self.next_seconds_between_status_checks
        if wait is not None and wait > cap:
            self.next_seconds_between_status_checks = cap

    check_active_jobs.ftlab_cap = cap
    check_active_jobs.ftlab_original = original
    Executor.check_active_jobs = check_active_jobs
    return cap


SRUN_STEP_ENV = "FTLAB_SLURM_SRUN_STEP"  # =1: keep the plugin's own job command
REPORT_ON_CLUSTER_ENV = "FTLAB_REPORT_ON_CLUSTER"  # =1: tables and plots as cluster jobs too


def report_in_head(environ=os.environ) -> bool:
    """Whether the report rules (tables, plots) are Snakemake local rules: under a cluster
    executor they run in the head process instead of as cluster jobs (under the local
    executor every job is local anyway). They take seconds and read small summary files,
    while a cluster job costs a scheduling pass and a Snakemake start (several seconds on
    the critical path of every study). FTLAB_REPORT_ON_CLUSTER=1 in the head process's
    environment sends them to the cluster as well (e.g. a login node that must stay idle)."""
    return environ.get(REPORT_ON_CLUSTER_ENV, "") in ("", "0")


def run_jobs_in_batch_step(environ=os.environ) -> bool:
    """Run each SLURM job with one Snakemake, in the job's batch step.

    The SLURM plugin (2.8) makes the batch script a Snakemake with its `slurm-jobstep`
    executor, which starts the job through `srun` in a second Snakemake: two Snakemake starts
    (~2.5 s each: imports, parsing the workflow, the job's DAG) before the job's script. This
    drops the first one's executor, so the batch script is that second Snakemake (local
    executor, `--mode remote`, the same arguments) and runs the job in the allocation's batch
    step, as the plugin already does for jobs with `mpi`. Array jobs (`slurm-array-jobs`)
    need the jobstep executor (it dispatches the array's tasks) and keep it, as does every job
    when the environment sets FTLAB_SLURM_SRUN_STEP=1. Returns whether the plugin is changed."""
    if environ.get(SRUN_STEP_ENV, "") not in ("", "0"):
        return False
    try:
        from snakemake_executor_plugin_slurm import Executor
    except ImportError:
        return False
    if getattr(Executor.additional_general_args, "ftlab_direct", False):
        return True
    original = Executor.additional_general_args

    def additional_general_args(self):
        if self.array_jobs:
            return original(self)
        return ""

    additional_general_args.ftlab_direct = True
    Executor.additional_general_args = additional_general_args
    return True
