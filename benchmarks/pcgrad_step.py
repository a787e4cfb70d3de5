"""Optimizer-step time of PCGrad vs the baseline (plain sum) for 2, 4 and 7 tasks.

One step = forward of a batch of geometry-task rows, per-task losses (ftlab.mtl.world_train),
the combined gradient (baseline: one backward of the summed loss; PCGrad: one backward per
task + projection, ftlab.mtl.surgery), clipping and an AdamW step. Both methods run in the same
process on the same batches; the ratio is PCGrad / baseline (median over timed steps).

  python benchmarks/pcgrad_step.py                  # CPU, the world demo's model
  python benchmarks/pcgrad_step.py --device cuda    # GPU (synchronised timing)
  python benchmarks/pcgrad_step.py --hidden 128 --layers 6 --ffn 512   # the paper's model
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ftlab.modeling import build_model
from ftlab.mtl.surgery import make_combiner, surgery_backward
from ftlab.mtl.world_train import task_losses, token_losses
from ftlab.tokenizer import build_char_tokenizer


def batch_of(tok, batch: int, width: int, n_tasks: int, device):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(tok), (batch, width), generator=gen)
    ids[:, 0] = tok.bos_token_id
    mask = torch.ones_like(ids)
    b = {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}
    tasks = torch.arange(batch) % n_tasks
    return {k: v.to(device) for k, v in b.items()}, tasks.to(device)


def time_steps(model, method, batch, tasks, n_tasks, steps, warmup, device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    combiner = make_combiner(method, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        row_loss, row_tokens = token_losses(model, batch)
        losses = task_losses(row_loss, row_tokens, tasks, n_tasks)
        surgery_backward(list(losses.values()), params, combiner)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 7])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tok = build_char_tokenizer(model_max_length=max(64, args.width))
    cfg = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads, "ffn": args.ffn,
           "max_length": max(64, args.width), "init_std": 0.1}  # fmt: skip
    rows = []
    for n in args.tasks:
        batch, tasks = batch_of(tok, args.batch, args.width, n, device)
        result = {"tasks": n}
        for method in ("baseline", "pcgrad"):
            torch.manual_seed(0)
            model = build_model(cfg, tok).to(device).train()
            result[f"{method}_ms"] = 1000 * time_steps(
                model, method, batch, tasks, n, args.steps, args.warmup, device
            )
        result["ratio"] = result["pcgrad_ms"] / result["baseline_ms"]
        rows.append(result)
        print(f"{n} tasks: baseline {result['baseline_ms']:.1f} ms, pcgrad "
              f"{result['pcgrad_ms']:.1f} ms, ratio {result['ratio']:.2f}", flush=True)  # fmt: skip
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "model": cfg, "batch": args.batch, "width": args.width,
                      "threads": args.threads, "results": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
