"""Evaluator throughput (rows/s): ftlab's greedy evaluator vs lm-eval's hf backend.

    python benchmarks/eval_throughput.py [--checkpoint DIR] [--rows 256] \
        [--batch-sizes 1,8,32,64,128,256] [--threads 1] [--repeat 1] [--decode auto]

Both backends decode the same `distance` rows with the same model on the CPU:

- ftlab: `ftlab.evaluate.evaluate_set` (what `evaluate_checkpoint` runs per eval set once the
  model is loaded: tokenize, length-sorted batched greedy decoding with the KV cache, scoring;
  --decode: its `eval.decode`, e.g. static; decoders side by side: gpu_world.py --decode-only).
  Timed: that call. Not timed: model load.
- lm-eval: `HFLM(pretrained=DIR, batch_size=B, device="cpu")` + `lm_eval.evaluator.evaluate` on
  a local `generate_until` task (YAML written to a temp dir, loaded through
  `TaskManager(include_path=...)`). Timed: `evaluate` (request building, `generate()` batches,
  exact_match). Not timed: model load (one HFLM per batch size), task/dataset load.

Both decode at most the same number of new tokens (ftlab's rule: longest answer + 2) and stop at
<eos>. HFLM (add_bos_token=None) tokenizes with the checkpoint's AutoTokenizer, which prepends
<bos> like ftlab's tokenizer; the script checks that every prompt gets identical ids in both and
reports how many greedy outputs agree (lm-eval decodes with skip_special_tokens=True, ftlab
keeps them, so an untrained model that emits <pad>/<bos> can disagree on a few rows).
The process runs offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE; HF_HOME defaults to .hf_home).

Model: --checkpoint, else the demo's trained base model if it exists, else an untrained model
of the default config's shape saved to a temp dir (fine for throughput, outputs are noise).
Rows: the default config's distance/no_atlantis test rows, regenerated with
`make_task_splits` (identical to results/demo/data/distance/no_atlantis/test.jsonl for the
first `test_rows_per_set` rows, and extended to --rows with the same generator).
Each configuration runs once after a short warm-up (--repeat N: best of N). Indicative only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CKPT = REPO / "results/demo/models/base_seed1/checkpoint-1314"
TASK_NAME = "ftlab_distance"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(REPO / ".hf_home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["<eos>"]
  do_sample: false
  max_gen_toks: {max_gen}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def default_config() -> dict:
    from ftlab.config import load_config

    return load_config(REPO / "config/config.yaml")


def make_rows(cfg: dict, n: int) -> list[str]:
    from ftlab.world import settings as world_settings
    from ftlab.world.cities import build_city_table
    from ftlab.world.datasets import make_task_splits

    c = world_settings.cities(cfg)
    c["atlantis_center"] = tuple(c["atlantis_center"])
    cities = build_city_table(**c)
    d = cfg["data"]
    splits = make_task_splits(
        cities, "distance", "no_atlantis", 0, n, d["seed"], split_overlap=d["split_overlap"]
    )
    return splits["test"]


def untrained_checkpoint(cfg: dict, out: Path) -> Path:
    import torch

    from ftlab.modeling import build_model
    from ftlab.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(model_max_length=cfg["model"]["max_length"])
    torch.manual_seed(0)
    build_model(cfg["model"], tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_ftlab(model, tokenizer, rows, batch_size, decode="auto"):
    from ftlab.evaluate import evaluate_set

    t0 = time.perf_counter()
    samples, _ = evaluate_set(model, tokenizer, "distance", rows, batch_size, decode=decode)
    return time.perf_counter() - t0, [s["output"] for s in samples]


def run_lmeval(lm, task_manager, limit=None):
    from lm_eval.evaluator import evaluate

    task_dict = task_manager.load([TASK_NAME])  # untimed: builds the task, loads the jsonl
    with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's progress bar
        t0 = time.perf_counter()
        res = evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=0)
        elapsed = time.perf_counter() - t0
    samples = sorted(res["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    return elapsed, samples


def best_of(repeat, fn):
    runs = [fn() for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="HF checkpoint dir (default: demo base model)")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeat", type=int, default=1, help="best of N timed runs")
    parser.add_argument("--decode", default="auto", help="ftlab's eval.decode (auto: loop on CPU)")
    args = parser.parse_args()
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")} | {1})

    import datasets
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ftlab.evaluate import load_checkpoint
    from ftlab.world.tasks import split_prompt, task_of_row

    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    cfg = default_config()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            ckpt, origin = Path(args.checkpoint), "given"
        elif DEMO_CKPT.is_dir():
            ckpt, origin = DEMO_CKPT, "demo base model"
        else:
            ckpt, origin = untrained_checkpoint(cfg, tmp / "untrained"), "untrained (temp)"

        rows = make_rows(cfg, args.rows)
        pairs = [split_prompt(r) for r in rows]
        model, tokenizer = load_checkpoint(ckpt, args.threads)
        ids = tokenizer([p for p, _ in pairs])["input_ids"]
        room = model.config.max_position_embeddings - max(map(len, ids))
        max_new = max(1, min(max(len(a) for _, a in pairs) + 2, room))  # as evaluate_set

        data = tmp / "rows.jsonl"
        data.write_text("".join(json.dumps({"prompt": p, "target": a}) + "\n" for p, a in pairs))
        (tmp / "tasks").mkdir()
        yaml_text = TASK_YAML.format(
            task=TASK_NAME, data=data, cache=tmp / "datasets", max_gen=max_new
        )
        (tmp / "tasks" / f"{TASK_NAME}.yaml").write_text(yaml_text)
        task_manager = TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)

        print(f"checkpoint: {ckpt} ({origin})")
        print(f"rows: {len(rows)} distance rows, max new tokens {max_new}, torch threads "
              f"{args.threads}, best of {args.repeat}")  # fmt: skip

        results = []  # (backend, batch size, seconds)
        run_ftlab(model, tokenizer, rows[:16], 8)  # warm-up
        ftlab_out = {}
        for b in sizes:
            sec, out = best_of(
                args.repeat, lambda b=b: run_ftlab(model, tokenizer, rows, b, args.decode)
            )
            results.append(("ftlab", b, sec))
            ftlab_out[b] = out
            print(f"  ftlab   batch {b:>4}: {len(rows) / sec:8.1f} rows/s")

        lm_out, same_ids = {}, None
        for b in sizes:
            lm = HFLM(pretrained=str(ckpt), batch_size=b, device="cpu")  # untimed model load
            if same_ids is None:
                run_lmeval(lm, task_manager, limit=8)  # warm-up
                same_ids = sum(lm.tok_encode(p) == i for (p, _), i in zip(pairs, ids, strict=True))
            sec, samples = best_of(args.repeat, lambda lm=lm: run_lmeval(lm, task_manager))
            contexts = [s["arguments"][0][0] for s in samples]  # (context, gen_kwargs)
            assert contexts == [p for p, _ in pairs], "lm-eval saw different prompts"
            lm_out[b] = [s["filtered_resps"][0] for s in samples]
            results.append(("lm-eval", b, sec))
            print(f"  lm-eval batch {b:>4}: {len(rows) / sec:8.1f} rows/s")

    def agree(a, c):
        return sum(x == y for x, y in zip(a, c, strict=True))

    n = len(rows)
    print()
    print(f"{'backend':<8} {'batch':>6} {'rows/s':>9} {'seconds':>8}")
    for backend, b, sec in results:
        print(f"{backend:<8} {b:>6} {n / sec:>9.1f} {sec:>8.3f}")
    rate = {(k, b): n / sec for k, b, sec in results}
    best = {k: max((r, b) for (kk, b), r in rate.items() if kk == k) for k in ("ftlab", "lm-eval")}
    (fr, fb), (lr, lb) = best["ftlab"], best["lm-eval"]
    print()
    print(f"batch 1: ftlab {rate['ftlab', 1]:.1f} vs lm-eval {rate['lm-eval', 1]:.1f} rows/s "
          f"-> {rate['ftlab', 1] / rate['lm-eval', 1]:.1f}x")  # fmt: skip
    print(f"best:    ftlab {fr:.1f} (batch {fb}) vs lm-eval {lr:.1f} (batch {lb}) rows/s "
          f"-> {fr / lr:.1f}x")  # fmt: skip
    print(f"prompt ids identical in both tokenizations: {same_ids}/{n}")
    agreement = [f"ftlab@{b} {agree(ftlab_out[1], ftlab_out[b])}/{n}" for b in sizes[1:]]
    agreement += [f"lm-eval@{b} {agree(ftlab_out[1], lm_out[b])}/{n}" for b in sizes]
    print("greedy outputs equal to ftlab@1: " + ", ".join(agreement))

    def mae(outputs):
        return sum(task_of_row(r).score(o, r) for r, o in zip(rows, outputs, strict=True)) / n

    print(f"distance MAE (ftlab's score): ftlab@1 {mae(ftlab_out[1]):.1f}, "
          f"lm-eval@1 {mae(lm_out[1]):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
