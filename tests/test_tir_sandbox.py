"""The sandbox refuses network, fork bombs, memory blow-ups and infinite loops, each with its
own per-sample error, and the batch goes on."""

import socket
import threading
import time

import pytest

from ftlab.tir.sandbox import Sandbox, SandboxLimits, network_namespace_available, truncate


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxLimits(cpu_seconds=1, wall_seconds=6, memory_mb=256, max_concurrency=2,
                                 max_output_chars=200))  # fmt: skip


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that the test process itself can reach."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    accepted = []

    def serve():
        srv.settimeout(8)
        try:
            conn, _ = srv.accept()
            accepted.append(True)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    srv.close()


def test_refusals_each_with_its_error_and_the_run_goes_on(sandbox, listener):
    port, accepted = listener
    cells = [
        "print(6 * 7)",
        f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('in')",
        "import os\nwhile True:\n    os.fork()",
        "x = bytearray(2 * 1024**3)\nprint(len(x))",
        "while True:\n    pass",
        "import time\ntime.sleep(60)",
        "print(1/0)",
        "print(sum(range(101)))",
    ]
    start = time.perf_counter()
    results = sandbox.run_many(cells)
    assert time.perf_counter() - start < 30
    status = [r.status for r in results]
    assert status == ["ok", "network", "process", "memory", "timeout", "timeout", "error", "ok"]
    assert results[0].stdout == "42\n" and results[-1].stdout == "5050\n"
    assert "network access is not allowed (socket.connect)" in results[1].error
    assert "starting processes is not allowed (os.fork)" in results[2].error
    assert "memory limit of 256 MB" in results[3].error
    assert "CPU-time limit of 1 s" in results[4].error
    assert "wall-time limit of 6 s" in results[5].error
    assert results[6].error == "ZeroDivisionError: division by zero"
    assert "in" not in results[1].stdout and not accepted  # the listener saw no connection


def test_the_namespace_alone_blocks_loopback(listener):
    """Without the audit hook's help (raw libc connect through ctypes), the empty network
    namespace still refuses 127.0.0.1 when the kernel provides one."""
    if not network_namespace_available():
        pytest.skip("no user/network namespaces here: only the audit hook guards the network")
    port, accepted = listener
    sandbox = Sandbox(SandboxLimits(network="namespace", wall_seconds=10))
    code = (
        "import ctypes, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"  # AF_INET, SOCK_STREAM, no socket module involved
        f"addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
        "addr = struct.pack('=H', 2) + addr[2:]\n"
        "rc = libc.connect(fd, addr, len(addr))\n"
        "print('rc', rc, 'errno', ctypes.get_errno())\n"
    )
    result = sandbox.run(code)
    assert result.ok, result.error
    assert result.stdout.startswith("rc -1 errno")  # ENETUNREACH: no interface is up
    assert not accepted
    assert sandbox.isolation["network"] == ["namespace", "audit_hook"]


def test_processes_that_bypass_python_are_capped(sandbox):
    if len(sandbox.isolation["processes"]) < 2:
        pytest.skip("no kernel-level process cap here (no pids cgroup, no user namespace)")
    code = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\nn = 0\n"
        "for i in range(200):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n        time.sleep(3)\n        libc._exit(0)\n"
        "    n += pid > 0\n"
        "print(n)\n"
    )
    result = sandbox.run(code)
    assert result.ok, result.error
    assert int(result.stdout) < sandbox.limits.max_processes


def test_output_is_truncated_and_files_stay_in_the_cell(sandbox):
    result = sandbox.run("print('a' * 5000)\nopen('f.txt', 'w').write('x')\nimport os\n"
                         "print(os.getcwd())")  # fmt: skip
    # SimpleTIR's truncate_content: 100 characters of head and of tail around its marker
    marker = "\n..._This content has been truncated to stay below 200 characters_...\n"
    assert result.ok and result.stdout.startswith("a" * 100 + marker)
    assert "ftlab_cell_" in result.stdout  # a fresh temporary directory
    flood = sandbox.run("while True:\n    print('x' * 10000)")
    assert flood.status in ("output_limit", "timeout")
    assert truncate("abcdef", 100) == "abcdef"


def test_concurrency_is_bounded():
    sandbox = Sandbox(SandboxLimits(max_concurrency=2, wall_seconds=10))
    start = time.perf_counter()
    results = sandbox.run_many(["import time\ntime.sleep(1)"] * 4)
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in results)
    assert elapsed >= 2.0  # four 1-second cells, two at a time


def test_bad_limits_are_named():
    with pytest.raises(ValueError, match="sandbox.cpu_seconds must be positive"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ValueError, match="sandbox.network must be"):
        SandboxLimits(network="none")


def test_final_answer_helper(sandbox):
    # SimpleTIR agent_utils.py execute_predictions defines final_answer() before every cell
    assert sandbox.run("final_answer(1 + 1)").stdout == "\\boxed{2}\n"
    assert sandbox.run("final_answer('x^2')").stdout == "\\boxed{x^2}\n"
    off = Sandbox(SandboxLimits(final_answer_helper=False, wall_seconds=10)).run("final_answer(2)")
    assert off.status == "error" and off.stderr_last_line.startswith("NameError")


def test_a_cells_own_exit_code_is_not_taken_for_a_refusal(sandbox):
    """The runner's refusal codes (3-6) count only when the runner itself exited with them
    (its exit marker): a cell that calls os._exit(3) is an error, not a memory refusal."""
    results = sandbox.run_many([f"import os\nprint(1, flush=True)\nos._exit({c})"
                                for c in (3, 4, 5, 6)])  # fmt: skip
    assert [r.status for r in results] == ["error"] * 4
    assert [r.error for r in results] == [f"exit status {c}" for c in (3, 4, 5, 6)]
    assert all(r.stdout == "1\n" for r in results)
