"""Model text that the seed executes in-process runs here in ftlab's sandbox (ftlab.tir.sandbox).

One Sandbox per purpose, made on first use. A cell whose sandbox fails (status sandbox_error:
the machine, not the code) raises SandboxFailure naming the scorer, rather than scoring 0.
"""

from __future__ import annotations

import threading

from ftlab.tir.sandbox import CellResult, Sandbox, SandboxLimits

_LOCK = threading.Lock()
_SANDBOXES: dict[str, Sandbox] = {}


class SandboxFailure(RuntimeError):
    pass


def run_cell(purpose: str, limits: SandboxLimits, code: str) -> CellResult:
    with _LOCK:
        box = _SANDBOXES.get(purpose)
        if box is None or box.limits != limits:
            box = _SANDBOXES[purpose] = Sandbox(limits)
    result = box.run(code)
    if result.status == "sandbox_error":
        raise SandboxFailure(f"GURU scorer {purpose}: the sandbox failed: {result.error}")
    return result
