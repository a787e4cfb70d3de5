"""What a cell's output does to the loop, as SimpleTIR's sandbox (a plain Python process) and
agent loop see it: sys.exit(<message>) writes the message to stderr as Python does, and a
\\boxed{ anywhere in the whole stdout ends the trajectory, also when truncation hid it from
the observation (agent_utils.py execute_predictions tests the untruncated stdout)."""

import subprocess
import sys

import pytest

from ftlab.tir.rollout import Generated, observation, run_rollouts
from ftlab.tir.sandbox import Sandbox, SandboxLimits

EXIT_CELLS = [
    "print('a')\nimport sys\nsys.exit('bye now')",
    "import sys\nsys.exit(0)",
    "import sys\nsys.exit()",
    "import sys\nsys.exit(2)",
    "import sys\nsys.exit([1, 2])",
    "raise SystemExit('line 1\\nline 2')",
]


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxLimits(wall_seconds=10, max_output_chars=64,
                                 final_answer_helper=False))  # fmt: skip


@pytest.mark.parametrize("code", EXIT_CELLS)
def test_sys_exit_writes_what_python_writes(sandbox, code):
    real = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    got = sandbox.run(code)
    assert got.stdout == real.stdout and got.stderr == real.stderr
    assert got.ok == (real.returncode == 0)
    if real.stderr:  # what the model is shown: the last line of stderr
        assert observation(got) == f"\nCode execution result: {real.stderr.splitlines()[-1]}\n"


def _loop(sandbox, code: str) -> dict:
    calls = []

    def gen(contexts):
        calls.append(contexts)
        return [Generated(f"```python\n{code}\n```" if len(calls) == 1 else "more", 1)
                for _ in contexts]  # fmt: skip

    [t] = run_rollouts([{"id": "p", "prompt": "P\n"}], 1, gen, sandbox, max_turns=3)
    return t.to_record()


def test_a_boxed_answer_cut_out_of_the_observation_still_ends_the_trajectory(sandbox):
    # 64 characters shown: 32 of head and of tail; the answer sits in the middle of 200
    code = "print('x' * 80 + '\\\\boxed{7}' + 'y' * 120)"
    rec = _loop(sandbox, code)
    [turn] = rec["turns"]
    assert "\\boxed{" not in turn["tool"]["stdout"]  # truncated away
    assert turn["tool"]["stdout_has_boxed"]
    assert rec["stop_reason"] == "answer" and rec["n_turns"] == 1


def test_a_boxed_answer_in_a_long_output_file_is_found(sandbox):
    # beyond what the sandbox reads back of the output (head and tail of 4096 bytes each)
    code = "print('x' * 50000)\nprint('\\\\boxed{9}')\nprint('y' * 50000)"
    rec = _loop(sandbox, code)
    assert rec["turns"][0]["tool"]["stdout_has_boxed"] and rec["stop_reason"] == "answer"
    no = _loop(sandbox, "print('x' * 50000)\nprint('\\\\boxed')\nprint('y' * 50000)")
    assert not no["turns"][0]["tool"]["stdout_has_boxed"] and no["n_turns"] == 2


def test_a_boxed_split_across_read_chunks_is_found(tmp_path):
    from ftlab.tir.sandbox import BOXED, file_contains

    for at in range((1 << 16) - 10, (1 << 16) + 2):  # around the first chunk boundary
        path = tmp_path / "out"
        path.write_bytes(b"x" * at + BOXED.encode() + b"1}")
        assert file_contains(path, BOXED), at
    path.write_bytes(b"x" * (1 << 16) + b"\\boxed")
    assert not file_contains(path, BOXED)
