"""Sandbox executions per second (2 concurrent cells) and evaluation-loop samples per second.

    .venv/bin/python benchmarks/tir_sandbox.py [--cells 200] [--problems 16] [--n 4]

1. Sandbox: `--cells` small cells (sum of squares, print) through Sandbox.run_many with
   max_concurrency 2 (this machine's 2 cores); executions/s = cells / wall seconds. Each cell
   is a fresh `python -I` process in new user+network namespaces with its rlimits.
2. Evaluation loop: a tiny char-level model warm-started (SFT, 200 steps) on arithmetic
   tool-call traces; `--problems` x `--n` multi-turn samples (HF generate on CPU, max_turns 3,
   sandbox on); samples/s = samples / wall seconds of run_rollouts, generation and tool time
   reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def bench_sandbox(cells: int) -> None:
    from ftlab.tir.sandbox import Sandbox, SandboxLimits

    box = Sandbox(SandboxLimits(max_concurrency=2))
    code = "print(sum(i * i for i in range(1000)))"
    box.run(code)  # warm the page cache
    start = time.perf_counter()
    results = box.run_many([code] * cells)
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    print(f"sandbox: {cells} cells in {elapsed:.2f} s = {cells / elapsed:.1f} executions/s "
          f"(2 concurrent; isolation {box.isolation['network']} / "
          f"{box.isolation['processes']})")  # fmt: skip


def bench_loop(problems: int, n: int) -> None:
    import torch

    from ftlab.llm.tiny import build_tiny_causal_lm
    from ftlab.tir.generation import HFTurnGenerator
    from ftlab.tir.rollout import run_rollouts
    from ftlab.tir.sandbox import Sandbox, SandboxLimits
    from ftlab.tir.sft import sft_on_traces
    from ftlab.tir.tasks import PLAIN_PROMPT, arith_problems, tool_trace

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_causal_lm(f"{tmp}/base", layers=2, hidden=64, max_length=128)
        train = arith_problems(300, seed=1)
        examples = [
            (PLAIN_PROMPT.format(question=r["question"]), tool_trace(r["question"], r["answer"]))
            for r in train
        ]
        sft_on_traces(base, examples, f"{tmp}/tool", steps=200)
        gen = HFTurnGenerator(f"{tmp}/tool", max_new_tokens=40, temperature=1.0)
        test = arith_problems(problems, seed=99, prefix="t")
        probs = [
            {"id": r["id"], "prompt": PLAIN_PROMPT.format(question=r["question"])} for r in test
        ]
        box = Sandbox(SandboxLimits(max_concurrency=2))
        start = time.perf_counter()
        trajs = run_rollouts(probs, n, gen, box, max_turns=3, count_tokens=gen.count_tokens,
                             batch_size=problems * n)  # fmt: skip
        elapsed = time.perf_counter() - start
        recs = [t.to_record() for t in trajs]
        gen_s = sum(r["gen_seconds"] for r in recs)
        tool_s = sum(r["tool_seconds"] for r in recs)
        turns = sum(r["n_turns"] for r in recs) / len(recs)
        print(f"evaluation loop: {len(recs)} samples in {elapsed:.2f} s = "
              f"{len(recs) / elapsed:.2f} samples/s (mean {turns:.2f} turns; generation "
              f"{gen_s:.2f} s, sandbox {tool_s:.2f} s summed over samples)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    bench_sandbox(args.cells)
    bench_loop(args.problems, args.n)
