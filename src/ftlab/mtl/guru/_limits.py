"""Time limits as the seed's scorers apply them.

`call_limited` mirrors verl/utils/py_functional.py timeout_limit (use_signals=False) @6133d10:
the call runs in a forked child; past `seconds` the child is terminated (killed if it outlives
SIGTERM by 0.5 s) and TimeoutError is raised; an exception raised in the child is raised
again here; a child that died without a result raises RuntimeError (non-zero exit) or
TimeoutError (exit 0, e.g. an unpicklable result). `seconds=True` means 1 second, as in the
seed (math_equal(..., timeout=True)).

`alarm` mirrors the SIGALRM timers of naive_dapo.py (`timeout`) and zebra_puzzle.py
(`time_limit`); signals only reach the main thread, so elsewhere the caller falls back (see
each use).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import signal
import threading

_FORK = multiprocessing.get_context("fork")


def _child(func, out, args):
    try:
        out.put((True, func(*args)))
    except Exception as exc:  # noqa: BLE001 - sent back to the parent, as the seed does
        try:
            pickle.dumps(exc)
            out.put((False, exc))
        except (pickle.PicklingError, TypeError):
            out.put((False, RuntimeError(f"exception {type(exc).__name__} not picklable: {exc}")))


def call_limited(func, seconds: float, *args):
    out = _FORK.Queue(maxsize=1)
    proc = _FORK.Process(target=_child, args=(func, out, args))
    proc.start()
    proc.join(timeout=float(seconds))
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=0.5)
        if proc.is_alive():
            # SIGTERM reaches a Python handler (one installed by the parent is inherited) only
            # between bytecodes, so a long C-level call (sympy's 9**9**9) ignores it; left alive,
            # the child would also hold the parent's exit (multiprocessing joins its children)
            proc.kill()
            proc.join()
        raise TimeoutError(f"{func.__name__} timed out after {seconds} s")
    try:
        ok, value = out.get(timeout=0.1)
        if ok:
            return value
        raise value
    except queue.Empty as err:
        if proc.exitcode not in (None, 0):
            raise RuntimeError(f"{func.__name__}: child exited with {proc.exitcode}") from err
        raise TimeoutError(f"{func.__name__}: child ended without a result") from err
    finally:
        out.close()
        out.join_thread()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def alarm(seconds: float, exc_type: type[BaseException] = TimeoutError):
    """Raise exc_type in the main thread after `seconds` (setitimer, like the seed)."""

    def handler(signum, frame):
        raise exc_type("Timed out!")

    old = signal.getsignal(signal.SIGALRM)
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
