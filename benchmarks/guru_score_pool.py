"""Scoring seconds of the guru engine: in the job's process vs a pool of score_workers.

    .venv/bin/python benchmarks/guru_score_pool.py [--problems 40] [--n 4] [--workers 2]

Planted code responses (`--problems` codegen__humaneval problems x `--n` responses; coder1
runs each in ftlab's sandbox, a fresh `python -I` process per program: a quarter right, a
quarter wrong, a quarter raising, a quarter sleeping 0.1 s before answering) are scored by
ftlab.mtl.guru_eval.score_task once in-process (score_workers 1) and once in a pool of
`--workers` forked processes (the pool's start is timed too); prints both wall times, their
ratio and that the scores are identical. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import time

FENCE = "```"
TESTS = json.dumps({"functional": "assert add(1, 2) == 3\nassert add(2, 5) == 7"})
PROGRAMS = [
    "def add(a, b):\n    return a + b",
    "def add(a, b):\n    return a - b",
    "def add(a, b):\n    raise ValueError('no')",
    "import time\ndef add(a, b):\n    time.sleep(0.1)\n    return a + b",
]


def planted(problems: int, n: int):
    from ftlab.mtl.guru_eval import Row

    rows = [Row([], "codegen__humaneval", TESTS, {}) for _ in range(problems)]
    outputs = [[f"{FENCE}python\n{PROGRAMS[(p + k) % len(PROGRAMS)]}\n{FENCE}" for k in range(n)]
               for p in range(problems)]  # fmt: skip
    return rows, outputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from ftlab.mtl.guru_eval import score_pool, score_task

    rows, outputs = planted(args.problems, args.n)
    score_task("bench", "bench.parquet", rows[:1], outputs[:1])  # warm imports and page cache
    t0 = time.perf_counter()
    serial = score_task("bench", "bench.parquet", rows, outputs)
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    with score_pool(args.workers) as pool:
        pooled = score_task("bench", "bench.parquet", rows, outputs, pool)
    t_pool = time.perf_counter() - t0
    assert pooled == serial, "the pool's scores differ from in-process"
    responses = args.problems * args.n
    mean = serial[0][f"pass@1_(avg{args.n})"]
    print(f"{responses} code responses (pass@1 {mean:.1f}%), {os.cpu_count()} CPUs: "
          f"in-process {t_serial:.2f} s, pool of {args.workers} {t_pool:.2f} s "
          f"(start included), ratio {t_serial / t_pool:.2f}x; scores identical")  # fmt: skip


if __name__ == "__main__":
    main()
