"""Runs one code cell inside the sandbox (started by ftlab.tir.sandbox, never imported).

Run as `python -I _cell_runner.py SPEC_JSON`. The order matters: join the cell's pids cgroup
if any, enter a new user and network namespace (no network interface, not even loopback; a
per-namespace process count), set the resource limits, then install the audit hook and
execute the cell. The hook ends the process at the first network or process-creation attempt
with a fixed exit code, so code cannot catch the refusal and carry on.
"""

import json
import os
import resource
import sys
import traceback

EXIT_ERROR, EXIT_MEMORY, EXIT_NETWORK, EXIT_PROCESS, EXIT_SETUP = 1, 3, 4, 5, 6
# The runner's own exits with the codes above also leave the code in this file (spec
# "exit_marker"), so a cell that calls os._exit(3) itself is not taken for a memory refusal.
EXIT_MARKER = None
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000

NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
    }
)
PROCESS_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.posix_spawn",
        "os.exec",
        "os.spawn",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
    }
)


def _exit_marked(code):
    try:
        fd = os.open(EXIT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, str(code).encode())
        os.close(fd)
    except (OSError, TypeError):  # no marker: the sandbox reports a plain error instead
        pass
    os._exit(code)


def _refuse(code, message):
    os.write(2, f"\nSandboxRefused: {message}\n".encode())
    _exit_marked(code)


def _audit(event, args):
    if event in NETWORK_EVENTS:
        _refuse(EXIT_NETWORK, f"network access is not allowed ({event})")
    if event in PROCESS_EVENTS:
        _refuse(EXIT_PROCESS, f"starting processes is not allowed ({event})")


def _unshare_network():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET) failed")


def main():
    global EXIT_MARKER
    spec = json.loads(sys.argv[1])
    EXIT_MARKER = spec.get("exit_marker")
    try:
        if spec["cgroup_procs"]:  # join the cell's pids cgroup first (needs the caps we drop)
            with open(spec["cgroup_procs"], "w") as fh:
                fh.write(str(os.getpid()))
        if spec["namespace"]:
            _unshare_network()
        mem = spec["memory_bytes"]
        cpu = spec["cpu_seconds"]
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_bytes"], spec["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if spec["namespace"] and os.geteuid() != 0:
            # In the new user namespace the process count is kept per namespace, so the limit
            # caps the cell's own tree (root is exempt from RLIMIT_NPROC: the pids cgroup is
            # its kernel-level cap).
            nproc = spec["max_processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.chdir(spec["workdir"])
        with open(spec["cell"]) as fh:
            source = fh.read()
    except Exception as exc:  # the sandbox could not be set up: not the cell's fault
        os.write(2, f"SandboxSetupError: {exc!r}\n".encode())
        _exit_marked(EXIT_SETUP)
    sys.path.insert(0, spec["workdir"])
    sys.addaudithook(_audit)
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "<cell>", "exec"), env)
    except MemoryError:
        sys.stdout.flush()
        os.write(2, b"\nMemoryError: the cell exceeded its memory limit\n")
        _exit_marked(EXIT_MEMORY)
    except SystemExit as exc:
        sys.stdout.flush()
        if exc.code is not None and not isinstance(exc.code, int):
            # as Python does at exit: sys.exit("msg") prints msg to stderr, status 1
            sys.stderr.write(f"{exc.code}\n")
            sys.stderr.flush()
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        os._exit(EXIT_ERROR if code else 0)
    except BaseException:
        sys.stdout.flush()
        etype, value, tb = sys.exc_info()
        lines = traceback.format_exception(etype, value, tb.tb_next)  # hide this frame
        sys.stderr.write("".join(lines))
        sys.stderr.flush()
        os._exit(EXIT_ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


main()
