"""A local Python sandbox for tool-integrated reasoning: one code cell, one subprocess.

Each cell runs in a fresh `python -I` process (ftlab/tir/_cell_runner.py) with
  - a CPU-time limit (RLIMIT_CPU) and a wall-time limit (the parent kills the process group),
  - an address-space limit (RLIMIT_AS: allocations beyond it raise MemoryError),
  - a file-size limit (RLIMIT_FSIZE) that also bounds what the cell can print,
  - a temporary working directory, deleted afterwards,
  - no network: a new user + network namespace (unshare(CLONE_NEWUSER | CLONE_NEWNET): no
    interface is up, not even loopback) when the kernel allows it, and always an audit hook
    (PEP 578) that ends the cell at the first connect/bind/sendto/DNS lookup,
  - no new processes: the audit hook ends the cell at os.fork/os.system/subprocess/exec/spawn;
    in the kernel too, forks that bypass Python (ctypes) are capped at `max_processes`: by a
    pids cgroup per cell when /sys/fs/cgroup/pids is writable (root; cgroup v1 layout), else by
    RLIMIT_NPROC inside the user namespace (per-namespace count; root is exempt from it),
    and everything left in the cell's cgroup or process group is killed when it ends,
  - output truncated to `max_output_chars` as SimpleTIR truncates it (agent_utils.py
    truncate_content: max_output_chars // 2 characters of head and of tail around a marker),
  - SimpleTIR's final_answer() helper defined before the cell (`final_answer_helper`, on by
    default: agent_utils.py execute_predictions prepends it to every cell it runs).
Concurrency is bounded: at most `max_concurrency` cells of one Sandbox run at a time.

The audit hook is a Python-level guard: code that reaches libc through ctypes bypasses it; the
namespaces and the process caps are what stop that; without user namespaces only the hook is
left for the network (and sandbox.network: namespace refuses to start). `Sandbox.isolation`
says which layers are active on this machine; it is recorded with every generations file.

Every outcome is one `CellResult` with a status and, unless ok, one clear error line:
  ok | error (the cell raised) | timeout (CPU or wall limit) | memory | network | process |
  output_limit (wrote past the file-size limit) | sandbox_error (the sandbox failed, not the cell)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("_cell_runner.py")
EXIT_ERROR, EXIT_MEMORY, EXIT_NETWORK, EXIT_PROCESS, EXIT_SETUP = 1, 3, 4, 5, 6
STATUSES = (
    "ok", "error", "timeout", "memory", "network", "process", "output_limit", "sandbox_error",
)  # fmt: skip
_NAMESPACE_OK: dict[str, bool] = {}
# SimpleTIR (recipe/simpletir/agent_utils.py, execute_predictions) runs every cell as this
# text followed by the cell: final_answer(x) prints \boxed{x}, which ends the trajectory.
FINAL_ANSWER_HELPER = '\ndef final_answer(result):\n    print(f"\\\\boxed{{{result}}}")\n\n'
PIDS_CGROUP = Path("/sys/fs/cgroup/pids")
BOXED = "\\boxed{"  # in a reply or a cell's stdout, it ends the trajectory (execute_predictions)


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 3.0  # SimpleTIR run_timeout=3.0 (sandbox/local_sandbox.py)
    memory_mb: int = 1024
    max_output_chars: int = 512  # SimpleTIR truncate_content(max_length=512)
    file_mb: int = 16
    max_processes: int = 16  # processes of one cell (pids cgroup, or RLIMIT_NPROC in its userns)
    max_concurrency: int = 4
    network: str = "auto"  # auto | namespace | audit
    final_answer_helper: bool = True  # define SimpleTIR's final_answer() before each cell

    def __post_init__(self):
        if self.network not in ("auto", "namespace", "audit"):
            raise ValueError(
                f"sandbox.network must be auto, namespace or audit, not {self.network!r}"
            )
        for key in ("cpu_seconds", "wall_seconds", "memory_mb", "max_output_chars", "file_mb",
                    "max_processes", "max_concurrency"):  # fmt: skip
            if getattr(self, key) <= 0:
                raise ValueError(f"sandbox.{key} must be positive, not {getattr(self, key)}")

    @classmethod
    def from_config(cls, cfg: dict) -> SandboxLimits:
        return cls(**cfg)


@dataclass
class CellResult:
    status: str
    stdout: str  # truncated (truncate)
    stderr: str  # truncated (truncate)
    error: str | None  # one line naming what happened, None when ok
    wall_seconds: float
    returncode: int | None
    # the last line of the whole stderr, truncated: what SimpleTIR shows the model of stderr
    stderr_last_line: str = ""
    # \boxed{ anywhere in the whole stdout (SimpleTIR tests the untruncated stdout)
    stdout_has_boxed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


def truncate(text: str, limit: int) -> str:
    """SimpleTIR's truncate_content (recipe/simpletir/agent_utils.py): a text longer than
    `limit` keeps its first limit // 2 and last -limit // 2 characters (Python's floor
    division: (-limit) // 2) around a marker line naming the limit."""
    if len(text) <= limit:
        return text
    return (
        text[: limit // 2]
        + f"\n..._This content has been truncated to stay below {limit} characters_...\n"
        + text[-limit // 2 :]
    )


def network_namespace_available(python: str = sys.executable) -> bool:
    """Whether a child can unshare its network namespace here (probed once per interpreter)."""
    if python not in _NAMESPACE_OK:
        probe = (
            "import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "raise SystemExit(0 if libc.unshare(0x40000000 | 0x10000000) == 0 else 1)\n"
        )
        try:
            rc = subprocess.run([python, "-I", "-c", probe], timeout=30).returncode
        except (OSError, subprocess.TimeoutExpired):
            rc = 1
        _NAMESPACE_OK[python] = rc == 0
    return _NAMESPACE_OK[python]


def pids_cgroup_available(root: Path = PIDS_CGROUP) -> bool:
    """Whether per-cell pids cgroups can be made here (cgroup v1 pids hierarchy, writable)."""
    probe = root / f"ftlab_probe_{os.getpid()}_{threading.get_ident()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


class Sandbox:
    """Runs code cells under SandboxLimits; thread-safe, bounded concurrency."""

    def __init__(self, limits: SandboxLimits | None = None, python: str = sys.executable):
        self.limits = limits or SandboxLimits()
        self.python = python
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrency)
        want = self.limits.network
        has_ns = want != "audit" and network_namespace_available(python)
        if want == "namespace" and not has_ns:
            raise RuntimeError(
                "sandbox.network is 'namespace' but this machine does not allow unshare("
                "CLONE_NEWUSER | CLONE_NEWNET) (user namespaces are disabled); set "
                "sandbox.network to 'auto' or 'audit' to rely on the audit hook alone"
            )
        self.use_namespace = has_ns
        self.use_cgroup = pids_cgroup_available()

    @property
    def isolation(self) -> dict:
        """Which protection layers are active (recorded with results)."""
        return {
            "network": ["namespace", "audit_hook"] if self.use_namespace else ["audit_hook"],
            "processes": ["audit_hook"]
            + (["pids_cgroup"] if self.use_cgroup else [])
            + (["RLIMIT_NPROC"] if self.use_namespace and os.geteuid() != 0 else []),
            "limits": asdict(self.limits),
        }

    def run(self, code: str) -> CellResult:
        with self._slots:
            return self._run(code)

    def run_many(self, cells: list[str]) -> list[CellResult]:
        """Results in input order; at most max_concurrency cells run at once."""
        if not cells:
            return []
        workers = min(self.limits.max_concurrency, len(cells))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.run, cells))

    # -- one cell ---------------------------------------------------------------------------
    def _run(self, code: str) -> CellResult:
        lim = self.limits
        workdir = Path(tempfile.mkdtemp(prefix="ftlab_cell_"))
        cgroup = PIDS_CGROUP / workdir.name if self.use_cgroup else None
        try:
            if cgroup is not None:
                cgroup.mkdir()
                (cgroup / "pids.max").write_text(str(lim.max_processes))
            cell = workdir / "cell.py"
            cell.write_text(FINAL_ANSWER_HELPER + code if lim.final_answer_helper else code)
            out_path, err_path = workdir / ".stdout", workdir / ".stderr"
            marker = workdir / ".exit_code"
            spec = {
                "cell": str(cell),
                "workdir": str(workdir),
                "namespace": self.use_namespace,
                "cgroup_procs": str(cgroup / "cgroup.procs") if cgroup else None,
                "memory_bytes": lim.memory_mb * 2**20,
                "cpu_seconds": lim.cpu_seconds,
                "file_bytes": lim.file_mb * 2**20,
                "max_processes": lim.max_processes,
                "exit_marker": str(marker),
            }
            env = {
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONHASHSEED": "0",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            }
            start = time.perf_counter()
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    [self.python, "-I", str(RUNNER), json.dumps(spec)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir,
                    start_new_session=True,
                )  # fmt: skip
                wall_timeout = False
                try:
                    rc = proc.wait(timeout=lim.wall_seconds)
                except subprocess.TimeoutExpired:
                    wall_timeout = True
                    rc = None
                finally:
                    _kill_group(proc, cgroup)
            elapsed = time.perf_counter() - start
            stdout = _read_head(out_path, lim)
            stderr = _read_head(err_path, lim)
            marked = marker.is_file() and marker.read_text() == str(rc)
            status, error = _classify(rc, wall_timeout, stderr, lim, marked)
            return CellResult(
                status=status,
                stdout=truncate(stdout, lim.max_output_chars),
                stderr=truncate(stderr, lim.max_output_chars),
                error=error,
                wall_seconds=elapsed,
                returncode=rc,
                stderr_last_line=truncate(
                    "\n".join(stderr.splitlines()[-1:]), lim.max_output_chars
                ),  # fmt: skip
                stdout_has_boxed=file_contains(out_path, BOXED),
            )
        except OSError as exc:
            return CellResult("sandbox_error", "", "", f"sandbox failed: {exc}", 0.0, None)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if cgroup is not None:
                _remove_cgroup(cgroup)


def _kill_group(proc: subprocess.Popen, cgroup: Path | None) -> None:
    """Kill the cell and anything it started (its session, its cgroup), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    if cgroup is not None:  # children that left the session (setsid) are still in the cgroup
        for _ in range(100):
            pids = (cgroup / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)


def _remove_cgroup(cgroup: Path) -> None:
    for _ in range(100):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # still has (dying) members
            time.sleep(0.01)


def _read_head(path: Path, lim: SandboxLimits) -> str:
    """The start and the end of a file that may be megabytes long (what truncate() keeps)."""
    keep = max(2 * lim.max_output_chars, 4096)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= 2 * keep:
            return fh.read().decode("utf-8", errors="replace")
        head = fh.read(keep).decode("utf-8", errors="replace")
        fh.seek(size - keep)
        tail = fh.read().decode("utf-8", errors="replace")
    return f"{head}\n...[{size - 2 * keep} bytes skipped]...\n{tail}"


def file_contains(path: Path, text: str, chunk: int = 1 << 16) -> bool:
    """Whether a file (up to file_mb, read in chunks) contains `text`; the chunks overlap by
    len(text) - 1 bytes so a match across a boundary is found."""
    needle = text.encode()
    tail = b""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if needle in tail + block:
                return True
            tail = (tail + block)[-(len(needle) - 1) :] if len(needle) > 1 else b""
    return False


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _classify(
    rc, wall_timeout: bool, stderr: str, lim: SandboxLimits, marked: bool = True
) -> tuple[str, str | None]:
    """(status, error) of a finished cell. `marked`: the runner itself exited with `rc` (its
    exit marker says so); a cell's own os._exit(3..6) is a plain error, not a refusal."""
    if wall_timeout:
        return "timeout", f"TimeoutError: wall-time limit of {lim.wall_seconds:g} s exceeded"
    if rc == 0:
        return "ok", None
    if rc in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr:
        return "timeout", f"TimeoutError: CPU-time limit of {lim.cpu_seconds} s exceeded"
    if rc in (EXIT_MEMORY, EXIT_NETWORK, EXIT_PROCESS, EXIT_SETUP) and not marked:
        return "error", _last_line(stderr) or f"exit status {rc}"
    if rc == EXIT_MEMORY or "MemoryError" in _last_line(stderr):
        return "memory", f"MemoryError: memory limit of {lim.memory_mb} MB exceeded"
    if rc == EXIT_NETWORK:
        return "network", _last_line(stderr)
    if rc == EXIT_PROCESS:
        return "process", _last_line(stderr)
    if rc == EXIT_SETUP:
        return "sandbox_error", _last_line(stderr)
    if rc == -signal.SIGXFSZ or "File too large" in _last_line(stderr):
        return "output_limit", f"OutputLimitError: wrote more than {lim.file_mb} MB"
    if rc is not None and rc < 0:
        return "error", f"killed by signal {signal.Signals(-rc).name}"
    return "error", _last_line(stderr) or f"exit status {rc}"
