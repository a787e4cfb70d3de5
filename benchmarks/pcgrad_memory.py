"""Peak extra host memory of one surgery_backward call, as a multiple of the parameter bytes.

A 25.2M-parameter float32 matrix (100 MiB) and T per-task losses (half of them pulling the other
way, so PCGrad projects); each measurement runs in a fresh process (VmHWM is a per-process high
water mark). "dp" runs the data-parallel path with identity collectives (one process): before
the fix it made the baseline build per-task gradients too. `--ref COMMIT` also measures
ftlab.mtl.surgery as of that commit (git show), for a before/after comparison.

  python benchmarks/pcgrad_memory.py                   # this checkout
  python benchmarks/pcgrad_memory.py --ref d4e9563     # and the implementation before the fix

Measured on this 2-CPU machine (peak increase / parameter bytes; the baseline's 1.1-1.2x
includes the gradient itself and autograd's temporaries):
  T = 5, d4e9563 (before): pcgrad 13.7x, pcgrad dp 13.7x, baseline 1.2x, baseline dp 13.7x
  T = 5, this fix:         pcgrad  5.8x, pcgrad dp  5.8x, baseline 1.2x, baseline dp  1.1x
  T = 2, d4e9563 (before): pcgrad  5.4x, pcgrad dp  5.4x, baseline 1.1x, baseline dp  5.4x
  T = 2, this fix:         pcgrad  2.8x, pcgrad dp  2.8x, baseline 1.1x, baseline dp  1.1x
The remaining PCGrad figure is the [T, P] buffer plus one task's gradient being copied in
(about T + 1; the last task's copy overlaps less).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import importlib.util, json, re, sys, torch
spec = importlib.util.spec_from_file_location("surgery_under_test", sys.argv[1])
surgery = importlib.util.module_from_spec(spec); sys.modules[spec.name] = surgery
spec.loader.exec_module(surgery)
method, n_tasks, dp = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
side = 2048
w = torch.nn.Parameter(torch.randn(side, side * 6) * 0.01)
x = torch.randn(n_tasks, 4, side)

def hwm_mib():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

class Identity:  # the data-parallel interface with one process: collectives do nothing
    def __init__(self, n): self.weights = torch.ones(n, dtype=torch.float64)
    def coefficients(self, device): return [1.0] * len(self.weights)
    def task_gradients(self, grads, reached): return reached
    def reached(self, reached, device): return reached
    def gradient(self, grad): pass

losses = [((x[t] @ w) ** 2).mean() * (1 if t % 2 else -1) for t in range(n_tasks)]
combiner = surgery.make_combiner(method, seed=0)
kwargs = {}
if dp:
    params = surgery.surgery_backward.__code__.co_varnames
    if "data_parallel" in params:
        kwargs["data_parallel"] = Identity(n_tasks)
    else:
        kwargs["reduce_grads"] = lambda g, r: (g, r)
before = hwm_mib()
surgery.surgery_backward(losses, [w], combiner, **kwargs)
param_mib = w.numel() * 4 / 2**20
print(json.dumps({"peak_increase_mib": hwm_mib() - before, "param_mib": param_mib}))
"""


def measure(source: Path, method: str, n_tasks: int, dp: bool) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), method, str(n_tasks),
                          "1" if dp else "0"], capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{source} {method} T={n_tasks}: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["peak_increase_mib"] / r["param_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--ref", default=None, help="also measure surgery.py at this git commit")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    sources = {"this checkout": root / "src/ftlab/mtl/surgery.py"}
    tmp = tempfile.TemporaryDirectory()
    if args.ref:
        old = Path(tmp.name) / "surgery_ref.py"
        old.write_text(subprocess.run(["git", "show", f"{args.ref}:src/ftlab/mtl/surgery.py"],
                                      cwd=root, capture_output=True, text=True,
                                      check=True).stdout)  # fmt: skip
        sources = {args.ref: old, **sources}
    rows = []
    for label, source in sources.items():
        for n in args.tasks:
            for method in ("pcgrad", "baseline"):
                for dp in (False, True):
                    ratio = measure(source, method, n, dp)
                    rows.append({"code": label, "tasks": n, "method": method, "dp": dp,
                                 "peak_over_params": round(ratio, 2)})  # fmt: skip
                    print(f"{label}: T={n} {method}{' dp' if dp else ''}: peak extra memory "
                          f"{ratio:.1f}x the parameter bytes", flush=True)  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
