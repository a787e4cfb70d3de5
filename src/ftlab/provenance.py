"""Provenance of one training or evaluation job: where, with what code and what inputs.

``collect(...)`` gathers it, ``write_provenance(path, ...)`` writes it atomically beside the
job's outputs (file contract: ``train_provenance``, ``eval_provenance``) and then records the
new results in the study's index (``ftlab.registry.index``). ``ftlab show RUN`` prints it.

Everything here is best effort by design: a job that trained for 16 hours must not fail because
``git`` is missing on the compute node or the index is locked. Missing facts are ``None``.
Nothing is imported eagerly: torch is asked about the GPU only when the job already imported it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from ftlab.io import atomic_write_json

log = logging.getLogger("ftlab.provenance")

FORMAT = 1
REPO = Path(__file__).resolve().parents[2]
# Distributions whose versions decide results; those not installed are simply left out.
PACKAGES = (
    "ftlab",
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "lm_eval",
    "trl",
    "datasets",
    "accelerate",
    "vllm",
)
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_RESTART_COUNT",
)


def _git(*args: str, cwd: Path = REPO) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace").strip() if out.returncode == 0 else None


def git_state(cwd: Path = REPO) -> dict:
    """Commit, branch, dirty flag and a hash of the uncommitted changes (tracked files' diff
    plus the names of untracked files), so two runs from the same dirty tree can be matched."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"commit": None, "branch": None, "dirty": None, "diff_sha256": None}
    status = _git("status", "--porcelain", "--untracked-files=normal", cwd=cwd) or ""
    diff = _git("diff", "HEAD", "--no-color", "--no-ext-diff", cwd=cwd) or ""
    untracked = sorted(line[3:] for line in status.splitlines() if line.startswith("??"))
    dirty = bool(status.strip())
    digest = hashlib.sha256((diff + "\n" + "\n".join(untracked)).encode()).hexdigest()
    return {
        "commit": commit,
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
        "dirty": dirty,
        "diff_sha256": digest if dirty else None,
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_info(device: str | None = None) -> dict:
    """The device the job was configured for and, when this process has torch loaded and a
    GPU visible, the GPU's name. torch is not imported here (it takes seconds)."""
    info = {"device": device, "gpu_name": None, "gpu_count": 0}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["gpu_count"] = torch.cuda.device_count()
                info["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
                info["device"] = device if device not in (None, "auto") else "cuda"
            elif device in (None, "auto"):
                info["device"] = "cpu"
        except Exception as err:  # a broken driver must not fail the job
            log.warning("could not query the GPU: %s", err)
    return info


def config_sha256(config) -> str | None:
    """Hash of the validated config as canonical JSON (key order does not matter)."""
    if config is None:
        return None
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(obj):
    """Snakemake's Namedlist/dict subclasses as plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def data_sha256(paths: Iterable[str | os.PathLike]) -> str | None:
    """One hash over the content of the given files (directories: every file inside, by
    relative path), in the order given. Missing paths count by name, so they show up."""
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            if not f.exists():
                digest.update(b"<missing>")
                continue
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def process_start_time() -> float | None:
    """Unix time this process started: the job's start (each Snakemake script job runs in its
    own Python process), so the end-of-job call can report the wall time."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        pass
    try:  # Linux without psutil: start time in clock ticks since boot
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def collect(
    *,
    stage: str,
    study: str | None = None,
    model: str | None = None,
    step: int | None = None,
    config=None,
    data: Iterable[str | os.PathLike] = (),
    device: str | None = None,
    started: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Provenance of the job running in this process. `stage`: train | evaluate | ...;
    `data`: the input files whose content the result depends on; `started`: Unix time the
    job began (default: this process's start)."""
    started = started if started is not None else process_start_time()
    now = time.time()
    return {
        "format": FORMAT,
        "stage": stage,
        "study": study,
        "model": model,
        "step": step,
        "git": git_state(),
        "host": socket.gethostname(),
        "user": _user(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        **device_info(device),
        "config_sha256": config_sha256(config),
        "data_sha256": data_sha256(data),
        "started_at": _iso(started),
        "finished_at": _iso(now),
        "wall_s": round(now - started, 3) if started else None,
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ} or None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **(extra or {}),
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER")


def write_provenance(path: str | os.PathLike, *, index: bool = True, **fields) -> dict:
    """``collect(**fields)`` written atomically to `path`; then the results of this job are
    recorded in the study's index (best effort: the result files stay the truth and
    ``ftlab`` refreshes the index from them anyway). Returns what was written."""
    record = collect(**fields)
    atomic_write_json(path, record)
    if index:
        try:
            from ftlab.registry.index import record_job

            record_job(Path(path))
        except Exception as err:  # locked, read-only or network filesystem: not fatal
            log.warning("results index not updated (%s); `ftlab list` will refresh it", err)
    return record


def write_job_provenance(smk, stage: str, data, device: str | None = None) -> dict:
    """Provenance of a Snakemake training (stage "train") or evaluation ("evaluate") job,
    written where the file contract puts it (train_provenance / eval_provenance of the job's
    model and step wildcards) and indexed. `smk`: the script's `snakemake` object; `data`: the
    input files the result depends on. A TIR evaluation (an `eval_set` wildcard: one job per
    eval set of a checkpoint) writes its own, in the eval set's folder."""
    from ftlab.paths import Layout

    study = smk.config["study"]
    model = smk.wildcards.model
    step = int(smk.wildcards.step) if stage == "evaluate" else None
    eval_set = getattr(smk.wildcards, "eval_set", None) if stage == "evaluate" else None
    if eval_set is not None:
        kind, where = "tir_eval_provenance", {"step": step, "eval_set": eval_set}
    elif stage == "evaluate":
        kind, where = "eval_provenance", {"step": step}
    else:
        kind, where = "train_provenance", {}
    fields = {"device": device} if device is not None else {}
    return write_provenance(Layout(study).path(kind, model=model, **where), stage=stage,
                            study=study, model=model, step=step, config=smk.config,
                            data=list(data), **fields)  # fmt: skip


def read_provenance(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None
