"""The code-generation scorer coder1 (codegen__*: humaneval, mbpp, livecodebench).

Mirrors verl/utils/reward_score/coder1/__init__.py with the seed's default executor
(CODER1_EXEC unset: unsafe_local_exec.py code_exec_local) @6133d10 (Reasoning360-MTL):
the code is every ```lang\\n...\\n``` block after the first </think> (else in the whole text),
joined by newlines; no block scores 0.0. The ground truth is JSON:
  {"functional": test code}  the program `code + "\\n" + test code` must exit with status 0
      (extra_info["prefix"], when set, is put before the code twice, as the seed does);
  {"inputs": [...], "outputs": [...]}  for each pair the program, given the input on stdin,
      must exit 0 and print what coder1's fuzzy_equal accepts (same lines; tokens equal,
      yes/no in any case, or numbers within 1e-6).
Returns {"score": 1.0 | 0.0, "acc": same}. The seed's other forms ("pytest",
"solution_file") are not used by the suite's tasks and raise UnsupportedSource here; a
ground truth of none of these forms raises ValueError, as in the seed.

Differences from the seed, and why: the seed runs each program as `python3` (the system
interpreter, or $CONDA_BIN_PATH/python3) under `timeout 30` and `ulimit -v` 10 GiB, with
network and subprocesses allowed. Here it runs as __main__ (runpy) in ftlab's sandbox with
this interpreter: 30 s wall and CPU, 10 GiB, 64 MiB of output, no network, no new
processes (a program that needs either fails here); stdin is a file on fd 0, so input(),
sys.stdin and open(0) all read it. Output that is not UTF-8 is decoded with replacement
characters (the seed's strict decode would raise).
"""

from __future__ import annotations

import json
import re

from ftlab.mtl.guru._sandbox import run_cell
from ftlab.tir.sandbox import SandboxLimits

CODE_PATTERN = re.compile(r"```(?:\w+)?\n(.*?)\n```", re.DOTALL)
ANSWER_PATTERN = re.compile(r"</think>(.*)", re.DOTALL)
OUTPUT_CHARS = 64 * 2**20
LIMITS = SandboxLimits(
    cpu_seconds=30,  # the seed's `timeout 30` (wall); CPU cannot exceed it in one thread
    wall_seconds=30.0,
    memory_mb=10 * 1024,  # the seed's ulimit -v of 10 GiB
    max_output_chars=OUTPUT_CHARS,
    file_mb=64,
    max_processes=16,
    max_concurrency=8,  # the seed's ThreadPoolExecutor(max_workers=min(8, len(tests)))
    final_answer_helper=False,
)

# Runs in the sandbox: the program as __main__ (like `python3 -c code`), stdin on fd 0.
_CELL = """
import os, runpy
with open("stdin.txt", "w", encoding="utf-8") as _fh:
    _fh.write({stdin!r})
with open("solution.py", "w", encoding="utf-8") as _fh:
    _fh.write({code!r})
_fd = os.open("stdin.txt", os.O_RDONLY)
os.dup2(_fd, 0)
os.close(_fd)
runpy.run_path("solution.py", run_name="__main__")
"""


def extract_code(solution_str: str) -> str:
    match = ANSWER_PATTERN.search(solution_str)
    if match:
        solution_str = match.group(1).strip()
    return "\n".join(CODE_PATTERN.findall(solution_str)).strip()


def fuzzy_equal(actual: str, expected: str, tolerance: float = 1e-6) -> bool:
    """coder1's comparison of a program's output with the expected output."""
    actual = actual.strip().replace("\r\n", "\n")
    expected = expected.strip().replace("\r\n", "\n")
    if actual == expected:
        return True
    actual_lines, expected_lines = actual.split("\n"), expected.split("\n")
    if len(actual_lines) != len(expected_lines):
        return False
    for actual_line, expected_line in zip(actual_lines, expected_lines, strict=True):
        if actual_line == expected_line:
            continue
        actual_tokens, expected_tokens = actual_line.split(), expected_line.split()
        if len(actual_tokens) != len(expected_tokens):
            return False
        for a, e in zip(actual_tokens, expected_tokens, strict=True):
            if a == e:
                continue
            if a.lower() in ("yes", "no") and e.lower() in ("yes", "no"):
                if a.lower() == e.lower():
                    continue
                return False
            try:
                if abs(float(a) - float(e)) <= tolerance:
                    continue
                return False
            except ValueError:
                return False
    return True


def run_program(code: str, stdin: str | None = None) -> tuple[bool, str]:
    """(exit status 0, stdout) of the program, as code_exec_local reports them."""
    # the seed passes no input for "" either: the child then reads an empty stream too
    result = run_cell("coder1", LIMITS, _CELL.format(stdin=stdin or "", code=code))
    return result.ok, result.stdout


def compute_score(solution_str, ground_truth, extra_info=None) -> dict:
    if hasattr(extra_info, "item") and not isinstance(extra_info, dict):
        extra_info = extra_info.item()  # a 0-d numpy array holding the dict (seed)
    extra_info = extra_info or {}
    code = extract_code(solution_str)
    if len(code) == 0:
        return {"score": 0.0, "acc": 0.0}
    truth = json.loads(ground_truth)
    if "functional" in truth:
        prefix = extra_info.get("prefix") if "prefix" in extra_info else None
        if prefix is not None:
            code = prefix + "\n" + prefix + "\n" + code  # the seed prepends it twice
        ok, _ = run_program(code + "\n" + truth["functional"])
        passed = ok
    elif "pytest" in truth or "solution_file" in truth:
        from ftlab.mtl.guru import UnsupportedSource

        form = "pytest" if "pytest" in truth else "solution_file"
        raise UnsupportedSource(
            f"coder1 ground truth with {form!r} tests is not ported to ftlab.mtl.guru "
            "(the suite's codegen tasks use 'functional' or 'inputs'/'outputs')"
        )
    elif "inputs" in truth and "outputs" in truth:
        pairs = list(zip(truth["inputs"], truth["outputs"], strict=False))
        if not pairs:
            # the seed's ThreadPoolExecutor(max_workers=0) raises this
            raise ValueError("max_workers must be greater than 0")
        passed = True
        for stdin, stdout in pairs:
            ok, output = run_program(code, stdin)
            if not ok or not fuzzy_equal(output.strip(), stdout.strip()):
                passed = False
                break
    else:
        raise ValueError(
            "Current supports for ground-truth are ['pytest', 'functional', 'solution_file', "
            f"'inputs/outputs'] -- No idea what's: ground_truth = {truth}"
        )
    score = 1.0 if passed else 0.0
    return {"score": score, "acc": score}
