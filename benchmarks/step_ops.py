"""Operators in one static training step of the paper model, per precision (CPU, a few s).

    python benchmarks/step_ops.py [--precisions fp32,bf16,bf16_weights,fp32+compile] [--batch 128]

On a GPU the paper model's step is bound by how many kernels it runs, not by arithmetic
(../shared/docs/gpu-notes.md): a captured step replays one kernel per operator. This counts,
on the CPU, the ATen operators of one step of ftlab.train_graph.CapturedStep (graph=False: the
same body the CUDA graph records) for each precision:
- `ops`: the outermost operators called (from Python or the autograd engine; views such as
  t/view/transpose, no-op `to` and conversions of 0-dim values, Python scalars the CPU
  wraps, left out), a proxy for the kernels a captured step launches on a GPU (a GPU
  splits some into a few kernels and fuses none, so compare precisions, not absolutes);
- `casts`: of those, dtype conversions, the work autocast adds to every step and
  bf16_weights removes;
- the step's CPU time (median of --repeat, one thread; not a GPU figure).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_world import PAPER_MODEL as GPU_WORLD_PAPER_MODEL  # noqa: E402

from ftlab.batches import StaticBatches  # noqa: E402
from ftlab.modeling import build_model  # noqa: E402
from ftlab.tokenizer import build_char_tokenizer  # noqa: E402
from ftlab.train_graph import CapturedStep, compute_copy  # noqa: E402
from ftlab.train_setup import decay_param_groups  # noqa: E402

PAPER_MODEL = {**GPU_WORLD_PAPER_MODEL, "init_std": 0.1}  # gpu_world.py's paper model
VIEWS = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::t", "aten::transpose",
    "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::slice", "aten::narrow",
    "aten::select", "aten::detach", "aten::alias", "aten::as_strided", "aten::permute",
    "aten::split", "aten::unbind", "aten::_unsafe_view", "aten::lift_fresh", "aten::empty",
    "aten::empty_like", "aten::empty_strided", "aten::resolve_conj", "aten::resolve_neg",
    "aten::contiguous", "aten::result_type", "aten::is_nonzero", "aten::item",
    "aten::_local_scalar_dense", "aten::size", "aten::stride", "aten::numel",
}  # fmt: skip


def make_step(precision: str, batch: int, width: int, n_rows: int,
              compiled: bool = False) -> CapturedStep:  # fmt: skip
    tok = build_char_tokenizer(model_max_length=PAPER_MODEL["max_length"])
    torch.manual_seed(0)
    model = build_model(PAPER_MODEL, tok).train()
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(width // 2, width + 1, (n_rows,), generator=gen)
    ids = torch.randint(4, len(tok), (n_rows, width), generator=gen).to(torch.uint8)
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = tok.pad_token_id
    data = StaticBatches(ids, lengths, batch, 1, "cpu")
    lr = torch.tensor(3e-4)
    # fused, as the GPU path's (the CPU's default for-loop AdamW runs ~15 operators a tensor)
    opt = torch.optim.AdamW(decay_param_groups(model, 0.01), lr=lr, fused=True)
    return CapturedStep(model, opt, data, 1.0, lr=lr, precision=precision, graph=False,
                        compute_model=compute_copy(model, precision),
                        compile_model=compiled)  # fmt: skip


def count_ops(step: CapturedStep, at: int) -> tuple[int, int, Counter]:
    """(operators, dtype conversions, operators by name) of step `at`: the outermost ATen
    calls (from Python or the autograd engine), each counted once however the CPU splits it
    (a foreach or fused operator is one or a few kernels on a GPU, a per-tensor loop here)."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step.run(at, 3e-4)
    ops: Counter = Counter()
    casts = 0
    for event in prof.events():
        parent = event.cpu_parent
        if not event.name.startswith("aten::") or event.name in VIEWS:
            continue
        if parent is not None and parent.name.startswith("aten::"):
            continue  # inside an operator counted already
        children = [c for c in event.cpu_children if c.name.startswith("aten::")]
        if event.name == "aten::to" and not children:
            continue  # same dtype and device: a no-op
        first = event.input_shapes[0] if event.input_shapes else []
        if event.name == "aten::to" and not first:
            continue  # a 0-dim value's conversion: Python scalars the CPU wraps
        ops[event.name] += 1
        casts += event.name in ("aten::to", "aten::_to_copy")
    return sum(ops.values()), casts, ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precisions", default="fp32,bf16,bf16_weights,fp32+compile",
                    help="+compile: the torch_compile config key (its time only: inductor's "
                    "generated kernels are not ATen operators)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=57, help="static row width (the paper's rows)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"paper model {PAPER_MODEL}, batch {args.batch} x width {args.width}, torch "
          f"{torch.__version__}, CPU, 1 thread")  # fmt: skip
    print(f"{'precision':<14}{'ops':>6}{'casts':>7}{'step (CPU)':>12}")
    for name in [p for p in args.precisions.split(",") if p]:
        precision, compiled = name.removesuffix("+compile"), name.endswith("+compile")
        step = make_step(precision, args.batch, args.width, 4 * args.batch, compiled)
        for s in range(1, 3):  # optimizer state exists (and the model is compiled) from here on
            step.run(s, 3e-4)
        n_ops, casts = ("-", "-") if compiled else count_ops(step, 3)[:2]
        times = []
        for s in range(4, 4 + args.repeat):
            t0 = time.perf_counter()
            step.run(s, 3e-4)
            times.append(time.perf_counter() - t0)
        print(f"{name:<14}{n_ops:>6}{casts:>7}{statistics.median(times) * 1e3:>10.0f}ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
