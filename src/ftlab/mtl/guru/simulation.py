"""Code-simulation scorers: codeio (simulation__codeio*) and cruxeval (simulation__cruxeval*).

Mirrors (Reasoning360-MTL @6133d10):
  verl/utils/reward_score/codeio.py  `codeio` (executes nothing): the predicted value is the
      JSON in the first ``` block (else the whole text), or the last complete {...} in it;
      its "output" (else "input", else itself); the truth likewise ("input" first when it
      names one). Both are normalised ("true"/"false" strings -> bools, JSON strings parsed)
      and compared with ==. Returns {"score": bool, "acc": bool}.
  verl/utils/reward_score/cruxeval/{__init__,utils}.py  `cruxeval`: the model's code is the
      first ```python block (after the first </think>, up to the next one, when there is
      one); it is appended to ground_truth["functional"] (the function) and the whole runs;
      the answer is right iff it completes: within 3 s (SIGALRM in the child, as the seed),
      stdout/stderr swallowed, stdin unreadable, the seed's reliability_guard applied (exit,
      os.remove, os.getcwd, shutil.rmtree, subprocess.Popen, ... disabled). Returns
      {"score": 1|0, "acc": same}.
      Differences: the seed runs it in a forked child of the scorer (4 s join, no memory cap);
      here it runs in ftlab's sandbox (ftlab.tir.sandbox: 4 GiB, 6 s wall, no network, no new
      processes - the seed's guard already makes forking fail); the seed eval()s the ground
      truth (json.dumps of {"functional": code}), here ast.literal_eval reads it (same value
      for such text; a truth that is no literal raises ValueError).
"""

from __future__ import annotations

import ast
import json
import re
import secrets

from ftlab.mtl.guru._sandbox import run_cell
from ftlab.tir.sandbox import SandboxLimits

# ---- codeio ----------------------------------------------------------------------------------


def normalize(obj):
    """Make equivalent values compare equal: bool strings, JSON strings, containers."""
    if isinstance(obj, str):
        s = obj.strip()
        if (s.startswith("{") and s.endswith("}")) or (s.startswith("[") and s.endswith("]")):
            try:
                return normalize(json.loads(s))
            except json.JSONDecodeError:
                pass
        low = s.lower()
        if low in {"true", "false"}:
            return low == "true"
        return obj
    if isinstance(obj, list):
        return [normalize(v) for v in obj]
    if isinstance(obj, dict):
        return {k: normalize(v) for k, v in obj.items()}
    return obj


def extract_last_complete_json(s: str):
    stack, start, last = [], None, None
    for i, ch in enumerate(s):
        if ch == "{":
            stack.append(i)
            if start is None:
                start = i
        elif ch == "}" and stack:
            stack.pop()
            if not stack:
                last = s[start : i + 1]
                start = None
    if last:
        try:
            return json.loads(last.replace("\n", ""))
        except json.JSONDecodeError:
            pass
    return None


def extract_json_from_code_block(text: str) -> str:
    m = re.findall(r"```(?:json)?\s*([\s\S]*?)```", str(text))
    return (m[0] if m else str(text)).strip()


def extract_answer(output_str):
    if output_str is None:
        return None
    clean = extract_json_from_code_block(output_str)
    try:
        obj = json.loads(clean)
        return obj.get("output", obj.get("input", obj))
    except json.JSONDecodeError:
        last = extract_last_complete_json(clean)
        if last is None:
            return None
        return last.get("output", last.get("input", last))
    except Exception:  # noqa: BLE001 - e.g. JSON that is no object: no answer (seed)
        return None


def convert_gt_to_object(gt):
    if isinstance(gt, str) and ('"input":' in gt or '"output":' in gt):
        if not (gt.strip().startswith("{") and gt.strip().endswith("}")):
            gt = "{" + gt + "}"
        try:
            obj = json.loads(gt)
            return obj.get("input", obj.get("output", obj))
        except json.JSONDecodeError:
            pass
    try:
        obj = json.loads(gt)
        return obj.get("output", obj.get("input", obj))
    except Exception:  # noqa: BLE001 - not a JSON object: a Python literal, else the text
        try:
            return ast.literal_eval(gt)
        except Exception:  # noqa: BLE001
            return gt


def check_accuracy(raw_pred: str, gt: str) -> bool:
    pred = normalize(extract_answer(raw_pred))
    truth = normalize(convert_gt_to_object(gt))
    # the seed's shortcut compares the *raw* truth text with bool spellings
    for group in (["True", "true", True], ["False", "false", False]):
        if pred in group and gt in group:
            return True
    return pred == truth


def codeio_score(model_output, ground_truth, extra_info: dict | None = None) -> dict:
    correct = check_accuracy(str(model_output), str(ground_truth))
    return {"score": correct, "acc": correct}


# ---- cruxeval --------------------------------------------------------------------------------

CRUXEVAL_SECONDS = 3  # the seed's check_correctness(timeout=3)
CRUXEVAL_LIMITS = SandboxLimits(
    cpu_seconds=6, wall_seconds=6.0, memory_mb=4096, final_answer_helper=False
)

# Runs in the sandbox: cruxeval/utils.py unsafe_execute (swallow_io, time_limit,
# reliability_guard) around exec(program, {}); the verdict goes to fd 1 after a nonce.
_CRUX_CELL = """
import contextlib, faulthandler, io, os, signal, tempfile
_write, _nonce = os.write, {nonce!r}
program = {program!r}

class _Timeout(Exception):
    pass

class _WriteOnly(io.StringIO):
    def read(self, *a, **k): raise OSError
    def readline(self, *a, **k): raise OSError
    def readlines(self, *a, **k): raise OSError
    def readable(self, *a, **k): return False

class _redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"

def _handler(signum, frame):
    raise _Timeout("Timed out!")

def _guard():
    faulthandler.disable()
    import builtins, shutil, subprocess, sys
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir",
                 "setuid", "fork", "forkpty", "killpg", "rename", "renames", "truncate",
                 "replace", "unlink", "fchmod", "fchown", "chmod", "chown", "chroot",
                 "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None

_dir = tempfile.mkdtemp()
os.chdir(_dir)
_guard()
try:
    _stream = _WriteOnly()
    with contextlib.redirect_stdout(_stream), contextlib.redirect_stderr(_stream):
        with _redirect_stdin(_stream):
            signal.setitimer(signal.ITIMER_REAL, {seconds})
            signal.signal(signal.SIGALRM, _handler)
            try:
                exec(program, {{}})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    _verdict = "passed"
except _Timeout:
    _verdict = "timed out"
except BaseException as e:
    _verdict = "failed"
_write(1, ("\\n" + _nonce + _verdict + "\\n").encode())
"""


def cruxeval_program(model_output, ground_truth) -> str:
    """ground_truth["functional"] + the model's code, extracted as the seed does."""
    model_output = str(model_output)
    try:
        if "</think>" in model_output:
            model_output = re.split(r"</think>", model_output)[1]  # [1]: after the first
        model_output = re.split(r"```python", model_output)[1]
        model_output = re.split(r"```", model_output)[0]
    except IndexError:
        pass  # keeps what was cut so far, as the seed's bare except does
    return ast.literal_eval(str(ground_truth))["functional"] + "\n" + model_output


def cruxeval_passes(program: str) -> bool:
    nonce = secrets.token_hex(8)
    cell = _CRUX_CELL.format(nonce=nonce, program=program, seconds=CRUXEVAL_SECONDS)
    result = run_cell("cruxeval", CRUXEVAL_LIMITS, cell)
    lines = result.stdout.splitlines()
    return result.ok and bool(lines) and lines[-1] == nonce + "passed"


def cruxeval_score(model_output, ground_truth, extra_info: dict | None = None) -> dict:
    is_correct = 1 if cruxeval_passes(cruxeval_program(model_output, ground_truth)) else 0
    return {"score": is_correct, "acc": is_correct}
