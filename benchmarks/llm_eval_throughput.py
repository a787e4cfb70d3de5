"""lm-eval hf backend throughput (samples/s) by batch size, plain and through ftlab's CachedLM.

    python benchmarks/llm_eval_throughput.py [--checkpoint DIR] [--arith 256] [--mc 128] \
        [--batch-sizes 1,auto,16] [--chunk 512] [--threads 1]

Model: --checkpoint, else a random `ftlab.llm.tiny` model in a temp dir (outputs are noise; fine
for speed). Tasks: the two local fixture tasks (tests/fixtures/lm_eval_tasks), with their data
regenerated at the sizes asked for: ftlab_tiny_arith (generate_until, "a+b=" -> sum, at most 4
new tokens) and ftlab_tiny_mc (multiple_choice, 4 choices -> 4 loglikelihood requests each).

Per batch size (one HFLM per size, load untimed) and per task, timed: `lm_eval.evaluator.evaluate`
on the already-built task (request building, model calls, metrics), 0-shot, no bootstrap:
- plain: HFLM alone, as lm-eval runs it;
- cached (cold): HFLM wrapped in `CachedLM` over an empty sqlite cache (chunks of --chunk
  requests committed one by one): the price of resumability;
- cached (warm): the same again, every answer from the cache (a resumed or repeated run).
"auto" is HFLM's batch-size detection (largest batch up to 64 that runs). Not a test; numbers
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests/fixtures/lm_eval_tasks"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(REPO / ".hf_home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "red blue green cat dog fish tree rock river cloud bread milk stone glass".split()


def make_data(tmp: Path, n_arith: int, n_mc: int) -> Path:
    """Task YAMLs (copies of the fixtures) over generated data of the requested sizes."""
    rng = random.Random(0)
    arith = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n_arith)]
    rows = {
        "ftlab_tiny_arith": [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in arith],
        "ftlab_tiny_mc": [
            {
                "question": f"Which word is number {i}: " + " ".join(rng.sample(WORDS, 6)) + "?",
                "choices": [" ".join(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(4)],
                "label": rng.randrange(4),
            }
            for i in range(n_mc)
        ],
    }
    tasks = tmp / "tasks"
    tasks.mkdir()
    for name, data in rows.items():
        path = tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        cfg = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
        cfg["dataset_kwargs"] = {"data_files": {"test": str(path)}, "cache_dir": str(tmp / "ds")}
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tasks


def timed_evaluate(lm, task_manager, name: str) -> float:
    from lm_eval.evaluator import evaluate

    task_dict = task_manager.load([name])  # untimed: builds the task, loads the jsonl
    for task in task_dict["tasks"].values():
        task.set_config(key="num_fewshot", value=0)
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        t0 = time.perf_counter()
        evaluate(lm=lm, task_dict=task_dict, bootstrap_iters=0)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="HF model dir (default: random ftlab.llm.tiny)")
    parser.add_argument("--arith", type=int, default=256, help="generate_until docs")
    parser.add_argument("--mc", type=int, default=128, help="multiple_choice docs (4 requests)")
    parser.add_argument("--batch-sizes", default="1,auto,16")
    parser.add_argument("--chunk", type=int, default=512, help="CachedLM chunk size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import datasets
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ftlab.llm.cache import SampleCache
    from ftlab.llm.evaluate import CachedLM, model_fingerprint
    from ftlab.llm.tiny import build_tiny_causal_lm

    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "httpx", "ftlab"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    sizes = [b if b.startswith("auto") else int(b) for b in args.batch_sizes.split(",")]
    docs = {"ftlab_tiny_arith": args.arith, "ftlab_tiny_mc": args.mc}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or build_tiny_causal_lm(tmp / "tiny", seed=0)
        tm = TaskManager(include_path=str(make_data(tmp, args.arith, args.mc)),
                         include_defaults=False)  # fmt: skip
        fingerprint = model_fingerprint(ckpt)
        print(f"model: {ckpt}; docs: {docs}; torch threads {args.threads}; chunk {args.chunk}")
        rate = {}  # (mode, batch, task) -> docs/s
        for b in sizes:
            lm = HFLM(pretrained=str(ckpt), batch_size=b, device="cpu")  # untimed load
            timed_evaluate(lm, tm, "ftlab_tiny_mc")  # warm-up (first-call allocations)
            for name, n in docs.items():
                rate["plain", b, name] = n / timed_evaluate(lm, tm, name)
                with SampleCache(tmp / f"cache_{b}_{name}.sqlite") as cache:
                    clm = CachedLM(lm, cache, fingerprint, chunk_size=args.chunk)
                    rate["cached cold", b, name] = n / timed_evaluate(clm, tm, name)
                    computed = clm.n_computed
                    rate["cached warm", b, name] = n / timed_evaluate(clm, tm, name)
                    assert clm.n_computed == computed  # warm run: nothing recomputed
                for mode in ("plain", "cached cold", "cached warm"):
                    print(f"  batch {b!s:>5} {name:<17} {mode:<12} {rate[mode, b, name]:8.1f} "
                          "samples/s")  # fmt: skip

    print()
    print(f"{'task':<17} {'mode':<12} " + " ".join(f"{'bs ' + str(b):>9}" for b in sizes)
          + "   speedup vs bs 1")  # fmt: skip
    for name in docs:
        for mode in ("plain", "cached cold", "cached warm"):
            r = [rate[mode, b, name] for b in sizes]
            speed = " ".join(f"{b}: {x / r[0]:.1f}x" for b, x in zip(sizes[1:], r[1:], strict=True))
            print(f"{name:<17} {mode:<12} " + " ".join(f"{x:9.1f}" for x in r) + f"   {speed}")


if __name__ == "__main__":
    main()
