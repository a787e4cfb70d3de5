"""What SLURM knows about a workflow's jobs: squeue for queued/running ones, sacct for ended
ones, and the SLURM plugin's per-job logs to tie a SLURM job id to a Snakemake rule and its
wildcards.

The plugin (snakemake-executor-plugin-slurm 2.8) writes each job's log to
``<slurm-logdir>/rule_<rule>/<wildcards>/<jobid>.log`` (array tasks: ``<jobid>_<task>.log``,
groups: ``group_<name>/...``) and tags the job with ``--comment rule_<rule>_wildcards_<wc>``,
where ``<wc>`` is the job's wildcard values joined by ``_``. ``job_key`` builds the same
string from a Snakemake job, so both sides meet on it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FAILED_STATES = (
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
)
ACTIVE_STATES = (
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
)
LOG_RE = re.compile(r"^(?P<id>\d+)(?:_(?P<task>\d+))?\.log$")


@dataclass
class SlurmJob:
    job_id: str
    key: str  # rule_<rule> or rule_<rule>_wildcards_<wc> (group_<name>... for groups)
    state: str = "UNKNOWN"
    elapsed: str | None = None
    exit_code: str | None = None
    log: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.state.split()[0] in FAILED_STATES

    @property
    def active(self) -> bool:
        return self.state.split()[0] in ACTIVE_STATES


def job_key(rule: str, wildcards: dict, group: str | None = None) -> str:
    """The plugin's comment string for a job (utils.get_job_wildcards + run_job)."""
    wc = "_".join(str(v) for v in wildcards.values()).replace("/", "_")
    head = f"group_{group}" if group else f"rule_{rule}"
    return f"{head}_wildcards_{wc}" if wc else head


def group_job(latest: dict[str, SlurmJob], group: str) -> SlurmJob | None:
    """The newest SLURM job of a group. The plugin names a group job after the group and its
    rules (GroupJob.name: ``<group>_<rule>_<rule>...``): its logs are in
    ``group_<group>_<rules>/`` and its comment is ``rule_<group>_<rules>``."""
    prefixes = (f"group_{group}_", f"rule_{group}_")
    found = [j for k, j in latest.items() if k == f"group_{group}" or k.startswith(prefixes)]
    return max(found, key=lambda j: _id_order(j.job_id)) if found else None


def available() -> bool:
    return shutil.which("squeue") is not None and _ok(["sinfo", "-h"])


def _ok(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def logged_jobs(slurm_logdir: Path) -> dict[str, SlurmJob]:
    """{job id: SlurmJob} from the plugin's log folder (key and log path; state unknown)."""
    jobs = {}
    if not slurm_logdir.is_dir():
        return jobs
    for path in slurm_logdir.glob("*/**/*.log"):
        m = LOG_RE.match(path.name)
        rel = path.relative_to(slurm_logdir).parts
        if not m or not (rel[0].startswith("rule_") or rel[0].startswith("group_")):
            continue
        wc = "/".join(rel[1:-1])  # "" when the rule has no wildcards
        key = f"{rel[0]}_wildcards_{wc}" if wc else rel[0]
        job_id = m["id"] + (f"_{m['task']}" if m["task"] else "")
        jobs[job_id] = SlurmJob(job_id, key, log=str(path))
    return jobs


def queued_jobs(workdir: Path | None = None) -> dict[str, SlurmJob]:
    """{job id: SlurmJob} of this user's queued and running jobs (squeue), with their key;
    with `workdir`, only the jobs submitted from it (the plugin submits with -D <workdir>), so
    another study's job with the same rule and wildcards is not taken for this one's."""
    import getpass

    out = _run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%M|%Z|%k"])
    where = str(Path(workdir).resolve()) if workdir is not None else None
    jobs = {}
    for line in (out or "").splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) != 5 or not parts[4].startswith(("rule_", "group_")):
            continue
        if where is not None and str(Path(parts[3]).resolve()) != where:
            continue
        jobs[parts[0]] = SlurmJob(parts[0], parts[4], parts[1], parts[2])
    return jobs


def accounting(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """{job id: (state, elapsed, exit code)} from sacct; {} when accounting is off."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    out = {}
    for start in range(0, len(job_ids), 500):  # keep the command line short
        ids = ",".join(j.split("_")[0] for j in job_ids[start : start + 500])
        text = _run(["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,State,Elapsed,ExitCode"])
        for line in (text or "").splitlines():
            parts = line.split("|")
            if len(parts) == 4:
                out[parts[0]] = (parts[1], parts[2], parts[3])
    return out


def latest_by_key(
    slurm_logdir: Path, use_slurm: bool = True, workdir: Path | None = None
) -> dict[str, SlurmJob]:
    """The most recent SLURM job of each rule+wildcards: its state (squeue, else sacct), elapsed
    time and log. The newest job id wins, so a retried job shows its last attempt. Queued jobs
    without a log yet (pending) count only if submitted from `workdir` (when given)."""
    jobs = logged_jobs(slurm_logdir)
    if use_slurm:
        for job_id, (state, elapsed, code) in accounting(sorted(jobs)).items():
            if job_id in jobs:
                jobs[job_id].state, jobs[job_id].elapsed, jobs[job_id].exit_code = (
                    state,
                    elapsed,
                    code,
                )
        for job_id, q in queued_jobs(workdir).items():
            if job_id in jobs:
                jobs[job_id].state, jobs[job_id].elapsed = q.state, q.elapsed
            else:
                jobs[job_id] = q
    latest: dict[str, SlurmJob] = {}
    for job in sorted(jobs.values(), key=lambda j: _id_order(j.job_id)):
        latest[job.key] = job
    return latest


def _id_order(job_id: str) -> tuple[int, int]:
    head, _, task = job_id.partition("_")
    return int(head), int(task or 0)
