"""GPU check and throughput of the world-model study (no snakemake needed; a few minutes).

    python benchmarks/gpu_world.py               # on a machine with a CUDA GPU
    python benchmarks/gpu_world.py --cpu         # smoke test of the same code on the CPU
    python benchmarks/gpu_world.py --decode-only [--cpu]   # only part 3, no training (below)

1. Builds the tiny study's data (tests/config_tiny.yaml) and trains its base model through the
   project's own entry point (ftlab.steps.train_model) on the GPU; fails (exit 1) unless the
   checkpoint says it trained on cuda and GPU memory was allocated. Evaluates it (batch auto).
2. Optimizer steps/s of the paper model (6 layers x 128 hidden) at batch 128 over --steps
   (>= 2,000) on the tiny study's multitask rows, through ftlab.train.run_training: the eager
   GPU loop vs the captured fast path (fp32, fp32 with tf32, bf16/fp16 mixed precision,
   bf16_weights, and with torch_compile), in one run, with the fast/eager ratio; the
   captured step alone in a tight loop (replay_only_fp32: the loop's host work vs the step's
   own time); optionally --share N concurrent fast-path processes on the one GPU (aggregate
   steps/s = sum of their rates).
3. Greedy-evaluation rows/s of the trained paper model at --eval-batch sizes (GPU 256 and
   2048): the KV-cache loop, the static-KV-cache decoder eager and with its per-token step
   captured as a CUDA graph, and HF generate() (ratios to the loop and to generate; answers
   equal to the loop's), plus the auto batch size.
Prints GPU memory per part and a JSON summary (also written with --json PATH).

--decode-only: part 3 alone, on --checkpoint or a random-initialised model (--decode-model
paper = 6 x 128, mini = mini.yaml's 3 x 64) at --decode-batches (CPU 1,64,512; GPU
256,2048,8192), --eval-rows prompts (CPU 1024, GPU 8192) of the tiny study's multitask test
rows or --rows-file; --threads, --repeat (best of N). A random model rarely emits <eos>, so its rows
run to the 8-token limit (no early stop): a trained checkpoint is the realistic case.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from ftlab import steps  # noqa: E402
from ftlab.config import validate_config  # noqa: E402
from ftlab.study import Study  # noqa: E402
from ftlab.world import settings as world_settings  # noqa: E402

PAPER_MODEL = {"layers": 6, "hidden": 128, "heads": 4, "ffn": 512, "max_length": 256}
SMALL_MODEL = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 64}
MINI_MODEL = {"layers": 3, "hidden": 64, "heads": 4, "ffn": 256, "max_length": 64}  # mini.yaml


def gpu_mem(dev: str) -> dict:
    if dev != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info()
    return {
        "max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "max_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
        "gpu_used_mib": round((total - free) / 2**20, 1),
    }


def build_data(cfg: dict, root: Path) -> tuple[Path, Path]:
    """The tiny study's cities, no_atlantis splits and multitask mix (train, test)."""
    cities = root / "cities.csv"
    steps.make_cities(str(cities), **world_settings.cities(cfg))
    trains, tests = [], []
    for task in Study(cfg).tasks:
        tr, te = root / f"{task}.train.jsonl", root / f"{task}.test.jsonl"
        split = world_settings.task_split(cfg, "no_atlantis")
        steps.make_task_split(str(cities), task, "no_atlantis", str(tr), str(te), **split)
        trains.append(str(tr))
        tests.append(str(te))
    mt_train, mt_test = root / "multitask.train.jsonl", root / "multitask.test.jsonl"
    steps.make_multitask(
        trains, tests, str(mt_train), str(mt_test), **world_settings.multitask(cfg)
    )
    return mt_train, mt_test


def part1_tiny_base(cfg: dict, root: Path, rows: Path, test: Path, dev: str) -> dict:
    from ftlab.evaluate import evaluate_checkpoint

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = root / "models" / "base_seed1"
    t0 = time.perf_counter()
    settings = world_settings.training(cfg, "base_seed1")
    steps.train_model(str(rows), None, str(out), str(root / "state"), 2, **settings)
    wall = time.perf_counter() - t0
    last = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    info = json.loads((last / "ftlab_checkpoint.json").read_text())
    mem = gpu_mem(dev)
    result = {
        "wall_s": round(wall, 2),
        "steps": info["step"],
        "device": info.get("device"),
        "precision": info.get("precision"),
        "gpu_name": info.get("gpu_name"),
        "cuda_graphs": info.get("cuda_graphs"),
        **mem,
    }
    if dev == "cuda" and (info.get("device") != "cuda" or mem["max_allocated_mib"] <= 0):
        print(json.dumps(result, indent=2))
        raise SystemExit("FAIL: the tiny base model did not train on the GPU")
    metrics = root / "eval.json"
    evaluate_checkpoint(
        checkpoint=str(last),
        eval_sets={"multitask__no_atlantis": str(test)},
        out_metrics=str(metrics),
        out_samples=str(root / "eval.samples.jsonl"),
        rows_per_set=None,
        batch_size="auto",
        threads=2,
        device=dev,
    )
    m = json.loads(metrics.read_text())
    result["eval"] = {k: m["sets"][0][k] for k in ("n_rows", "rows_per_s")}
    return result


def _log_rate(out_dir: Path, skip: int) -> float:
    """steps/s between the first logged step >= skip and the last (excludes set-up/capture)."""
    with open(out_dir / "training_log.csv") as fh:
        rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(fh)]
    first, last = next(r for r in rows if r[0] >= skip), rows[-1]
    if first == last:  # a single row: steps/s since the start (includes the set-up)
        return last[0] / max(last[1], 1e-9)
    return (last[0] - first[0]) / max(last[1] - first[1], 1e-9)


def train_once(root: Path, rows: Path, model_cfg: dict, n_steps: int, batch: int, dev: str,
               precision: str, graphs: bool, tag: str,
               launcher: str | None = None, tf32: bool = False,
               torch_compile: bool = False) -> dict:  # fmt: skip
    """One training run of run_training; launcher (torchrun): the same call as the one
    process of a launched job (ftlab.launch's worker), started by that launcher. tf32: the
    config key (float32 matmuls in TF32); reset afterwards, as it is process-wide.
    torch_compile: the config key (the step's model compiled before the capture)."""
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = root / "speed" / tag
    training = {
        "epochs": 1, "max_steps": None, "batch_size": batch, "lr": 3e-4, "weight_decay": 0.01,
        "warmup_steps": 50, "save_every": n_steps, "max_grad_norm": 1.0,
        "log_every": max(1, min(50, n_steps // 10)),
    }  # fmt: skip
    kwargs = dict(
        model_name=tag, train_rows=str(rows), init_checkpoint=None,
        model_cfg={**model_cfg, "init_std": 0.1}, training=training, seed=1,
        total_steps=n_steps, saved_steps=[n_steps], out_dir=str(out),
        state_dir=str(root / "speed-state" / tag), threads=2, device=dev,
        precision=precision, cuda_graphs=graphs, **({"tf32": True} if tf32 else {}),
        **({"torch_compile": True} if torch_compile else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    if launcher is None:
        from ftlab.train import run_training

        run_training(**kwargs)
    else:
        launched(root / f"{tag}.launch.json", "ftlab.train:run_training", kwargs, launcher, dev)
    wall = time.perf_counter() - t0
    if tf32 and dev == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    info = json.loads((out / f"checkpoint-{n_steps}" / "ftlab_checkpoint.json").read_text())
    with open(out / "training_log.csv") as fh:
        final_loss = float(list(csv.DictReader(fh))[-1]["loss"])
    return {
        "steps": n_steps,
        "steps_per_s": round(_log_rate(out, min(100, n_steps // 2)), 1),
        "wall_s": round(wall, 2),
        "final_loss": final_loss,
        "captured": info.get("cuda_graphs"),
        "tf32": info.get("tf32"),
        "torch_compile": info.get("torch_compile"),
        **(gpu_mem(dev) if launcher is None else {"launcher": launcher}),
        "checkpoint": str(out / f"checkpoint-{n_steps}"),
    }


def launched(payload: Path, target: str, kwargs: dict, launcher: str, dev: str) -> None:
    """target(**kwargs) in the one process of a launched 1-GPU (or 1-CPU) job."""
    from ftlab import launch

    plan = launch.Plan(family="train", launcher=launcher, gpus_per_node=int(dev == "cuda"))
    payload.write_text(json.dumps({"plan": plan.to_dict(), "target": target, "kwargs": kwargs}))
    cmd = launch.launcher_command(plan, "no", str(payload), port=launch.free_port())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        raise SystemExit(f"FAIL: the launched training exited {proc.returncode}: {cmd}")


def launch_check(root: Path, rows: Path, model_cfg: dict, n_steps: int, batch: int,
                 dev: str) -> dict:  # fmt: skip
    """Issue 14's proof on one device: the launched path (torchrun starting ftlab.launch's
    worker, one process) against the direct call; same steps/s beyond start-up, same final
    loss. (accelerate refuses one process with --multi_gpu; ftlab launches only for >= 2.)"""
    fast = dev == "cuda"
    tag = "fast_fp32" if fast else "eager_fp32"
    direct = train_once(root, rows, model_cfg, n_steps, batch, dev, "fp32", fast, tag)
    r = train_once(root, rows, model_cfg, n_steps, batch, dev, "fp32", fast, f"{tag}_torchrun",
                   launcher="torchrun")  # fmt: skip
    r["steps_per_s_vs_direct"] = round(r["steps_per_s"] / direct["steps_per_s"], 3)
    r["wall_s_minus_direct"] = round(r["wall_s"] - direct["wall_s"], 2)
    r["final_loss_diff_vs_direct"] = abs(r["final_loss"] - direct["final_loss"])
    print("launched (torchrun):", json.dumps(r), flush=True)
    return {"direct": direct, "torchrun": r}


def replay_only(rows: Path, model_cfg: dict, n_steps: int, batch: int, dev: str) -> dict:
    """Steps/s of the captured step alone (CapturedStep.run in a tight loop: batch load, lr,
    graph replay, loss sum; no schedule, logging or checkpoints), fp32, next to the training
    loop's figure: if this is much higher, the gap to gpu-notes' 212 steps/s is the loop's
    host work; if not, it is in the captured step itself."""
    from ftlab.batches import StaticBatches, make_batches, read_rows
    from ftlab.train_checkpoints import load_or_build_model
    from ftlab.train_graph import CapturedStep
    from ftlab.train_setup import decay_param_groups

    device = torch.device(dev)
    model, tok = load_or_build_model(None, None, {**model_cfg, "init_std": 0.1}, 1, device)
    batches = make_batches(read_rows(str(rows)), tok, model, batch, 1)
    static = StaticBatches(batches.ids, batches.lengths, batch, 1, device)
    lr = torch.tensor(3e-4, dtype=torch.float32, device=device)
    fused = {"fused": True, "capturable": True} if dev == "cuda" else {}
    opt = torch.optim.AdamW(decay_param_groups(model, 0.01), lr=lr, **fused)
    step = CapturedStep(model, opt, static, 1.0, lr=lr, graph=dev == "cuda")
    for s in range(1, 21):  # warm-up replays
        step.run(s, 3e-4)
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for s in range(21, 21 + n_steps):
        step.run(s, 3e-4)
    step.take_loss_sum()  # one host sync: the GPU work is counted
    dt = time.perf_counter() - t0
    return {"steps": n_steps, "steps_per_s": round(n_steps / dt, 1),
            "captured": step.graph is not None}  # fmt: skip


SHARE_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/src")
sys.path.insert(0, sys.argv[1] + "/benchmarks")
from pathlib import Path
import gpu_world
a = json.loads(sys.argv[2])
r = gpu_world.train_once(Path(a["root"]), Path(a["rows"]), a["model"], a["steps"], a["batch"],
                         "cuda", "fp32", True, a["tag"])
print("RESULT " + json.dumps(r))
"""


def shared(root: Path, rows: Path, model_cfg: dict, n: int, n_steps: int, batch: int) -> dict:
    """n fast-path trainings at once on the one GPU (separate processes)."""
    procs = []
    t0 = time.perf_counter()
    for i in range(n):
        arg = {"root": str(root), "rows": str(rows), "model": model_cfg, "steps": n_steps,
               "batch": batch, "tag": f"share{i}"}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SHARE_CHILD, str(ROOT), json.dumps(arg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
        )
    rates = []
    for p in procs:
        out, _ = p.communicate()
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            raise SystemExit(f"FAIL: a shared training process failed (rc {p.returncode})")
        rates.append(json.loads(line[7:])["steps_per_s"])
    return {
        "processes": n,
        "steps_each": n_steps,
        "per_process_steps_per_s": rates,
        "aggregate_steps_per_s": round(sum(rates), 1),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


DECODERS = ("loop", "static", "static_graph", "generate")  # static_graph: CUDA only


def _decode_run(model, tok, prompts, enc, batch, method, dev, max_new=8):
    """(seconds, outputs) of one ftlab.evaluate.greedy_decode call (a captured decoder is
    built per call, so its capture is timed)."""
    from ftlab.evaluate import greedy_decode

    name, graphs = ("static", True) if method == "static_graph" else (method, False)
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = greedy_decode(model, tok, prompts, batch, max_new, name, graphs=graphs, encoded=enc)
    if dev == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def decode_speed(model, tok, prompts, batches, dev, repeat=1) -> dict:
    """Rows/s of every decoder at each batch size (best of `repeat` rounds; each round runs
    every decoder once, so load changes hit them alike), the ratios to the loop and to HF
    generate, and how many answers equal the loop's. Untimed: tokenizing (once, as
    evaluate_set does) and one warm-up batch per decoder."""
    methods = [m for m in DECODERS if m != "static_graph" or dev == "cuda"]
    enc = tok(prompts)["input_ids"]
    table = {}
    for batch in batches:
        row, outs, best = {}, {}, dict.fromkeys(methods, float("inf"))
        for m in methods:
            _decode_run(model, tok, prompts[:batch], enc[:batch], batch, m, dev)  # warm-up
        for _ in range(repeat):
            for m in methods:
                if dev == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                sec, outs[m] = _decode_run(model, tok, prompts, enc, batch, m, dev)
                best[m] = min(best[m], sec)
                if dev == "cuda":
                    row[f"{m}_max_allocated_mib"] = gpu_mem(dev)["max_allocated_mib"]
        for m in methods:
            row[f"{m}_rows_per_s"] = round(len(prompts) / best[m], 1)
        for m in methods:
            rate = row[f"{m}_rows_per_s"]
            row[f"{m}_vs_loop"] = round(rate / row["loop_rows_per_s"], 2)
            row[f"{m}_vs_generate"] = round(rate / row["generate_rows_per_s"], 2)
            same = sum(a == b for a, b in zip(outs[m], outs["loop"], strict=True))
            row[f"{m}_answers_equal_loop"] = f"{same}/{len(prompts)}"
        table[batch] = row
        print(f"decode batch {batch}:", json.dumps(row), flush=True)
    return {"rows": len(prompts), "batches": table}


def eval_speed(checkpoint: str, test: Path, n_rows: int, batches: list[int], dev: str) -> dict:
    from ftlab.batches import read_rows
    from ftlab.evaluate import load_checkpoint, resolve_batch_size
    from ftlab.world.tasks import split_prompt

    model, tok = load_checkpoint(checkpoint, threads=2, device=dev)
    prompts = [split_prompt(r)[0] for r in read_rows(test)]
    prompts = (prompts * (n_rows // max(len(prompts), 1) + 1))[:n_rows]
    result = decode_speed(model, tok, prompts, batches, dev, repeat=3 if dev == "cuda" else 1)
    seq = max(len(x) for x in tok(prompts)["input_ids"]) + 8
    result["auto_batch_size"] = resolve_batch_size("auto", model, len(prompts), seq)
    return result


def decode_only(args, dev: str) -> dict:
    """--decode-only: the decoders on a given checkpoint, else a random-initialised model of
    --decode-model's shape, on --rows-file prompts, else the tiny study's multitask test rows
    (no training)."""
    from ftlab.batches import read_rows
    from ftlab.evaluate import load_checkpoint
    from ftlab.modeling import build_model
    from ftlab.tokenizer import build_char_tokenizer
    from ftlab.world.tasks import split_prompt

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, tok = load_checkpoint(args.checkpoint, threads=args.threads, device=dev)
        origin = args.checkpoint
    else:
        shape = {"paper": PAPER_MODEL, "mini": MINI_MODEL}[args.decode_model]
        tok = build_char_tokenizer(model_max_length=shape["max_length"])
        tok.padding_side = "left"
        torch.manual_seed(0)
        model = build_model({**shape, "init_std": 0.1}, tok).to(dev).eval()
        origin = f"random {args.decode_model} model {shape}"
    with tempfile.TemporaryDirectory() as tmp:
        if args.rows_file:
            rows = read_rows(args.rows_file)
        else:
            cfg = validate_config(yaml.safe_load((ROOT / "tests/config_tiny.yaml").read_text()))
            rows = read_rows(build_data(cfg, Path(tmp))[1])
    prompts = [split_prompt(r)[0] for r in rows]
    n_rows = args.eval_rows or (1024 if dev == "cpu" else 8192)
    prompts = (prompts * (n_rows // max(len(prompts), 1) + 1))[:n_rows]
    batches = [int(b) for b in (args.decode_batches or ("1,64,512" if dev == "cpu" else
                                                        "256,2048,8192")).split(",")]  # fmt: skip
    print(f"decode-only on {dev}: {origin}; {len(prompts)} prompts; torch threads "
          f"{torch.get_num_threads()}; load {os.getloadavg()}", flush=True)  # fmt: skip
    result = decode_speed(model, tok, prompts, batches, dev, repeat=args.repeat)
    result["model"] = origin
    result["loadavg_after"] = os.getloadavg()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu", action="store_true", help="smoke test on the CPU, small sizes")
    ap.add_argument("--steps", type=int, default=None, help="steps per speed run (GPU 2000)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eval-rows", type=int, default=None, help="GPU 8192")
    ap.add_argument(
        "--eval-batch", default=None, help="batch sizes, comma-separated (GPU 256,2048)"
    )
    ap.add_argument(
        "--decode-only",
        action="store_true",
        help="only the decoders' rows/s (no training): --checkpoint or a random model",
    )
    ap.add_argument("--checkpoint", default=None, help="--decode-only: an HF checkpoint dir")
    ap.add_argument(
        "--decode-model",
        choices=["paper", "mini"],
        default="paper",
        help="--decode-only without --checkpoint: the random model's shape",
    )
    ap.add_argument("--rows-file", default=None, help="--decode-only: jsonl rows to prompt with")
    ap.add_argument("--decode-batches", default=None, help="--decode-only (CPU 1,64,512)")
    ap.add_argument("--threads", type=int, default=2, help="--decode-only: torch threads")
    ap.add_argument("--repeat", type=int, default=1, help="--decode-only: best of N")
    ap.add_argument("--share", type=int, default=None, help="concurrent fast runs (GPU 4)")
    ap.add_argument(
        "--precisions",
        default="fp32,fp32+tf32,bf16,fp16,bf16_weights,fp32+compile,bf16_weights+compile",
        help="fast-path precisions (+tf32, +compile: with the tf32 / torch_compile config key)",
    )
    ap.add_argument(
        "--launch-only",
        action="store_true",
        help="only the launcher check: the direct call vs torchrun with one process",
    )
    ap.add_argument("--json", default=None, help="also write the summary here")
    ap.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    args = ap.parse_args(argv)

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch; run with --cpu for the smoke test", file=sys.stderr)
        return 2
    dev = "cpu" if args.cpu else "cuda"
    if args.decode_only:
        summary = {"device": dev, "torch": torch.__version__,
                   "gpu_name": torch.cuda.get_device_name() if dev == "cuda" else None,
                   "decode": decode_only(args, dev)}  # fmt: skip
        text = json.dumps(summary, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0
    n_steps = args.steps or (30 if args.cpu else 2000)
    batch = args.batch if not args.cpu else min(args.batch, 16)
    eval_rows = args.eval_rows or (64 if args.cpu else 8192)
    eval_batches = [
        int(b) for b in (args.eval_batch or ("16" if args.cpu else "256,2048")).split(",")
    ]
    share = args.share if args.share is not None else (0 if args.cpu else 4)
    model_cfg = SMALL_MODEL if args.cpu else PAPER_MODEL
    torch.set_num_threads(2)

    cfg = yaml.safe_load((ROOT / "tests" / "config_tiny.yaml").read_text())
    cfg["device"] = dev
    cfg = validate_config(cfg)
    summary: dict = {
        "device": dev,
        "gpu_name": torch.cuda.get_device_name() if dev == "cuda" else None,
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows, test = build_data(cfg, root / "data")
        if args.launch_only:
            summary["launch_check"] = launch_check(root, rows, model_cfg, n_steps, batch, dev)
            text = json.dumps(summary, indent=2)
            print(text)
            if args.json:
                Path(args.json).write_text(text + "\n")
            return 0
        summary["tiny_base"] = part1_tiny_base(cfg, root / "tiny", rows, test, dev)
        print("tiny base:", json.dumps(summary["tiny_base"]), flush=True)

        speed = {}
        speed["eager_fp32"] = train_once(
            root, rows, model_cfg, n_steps, batch, dev, "fp32", False, "eager_fp32"
        )
        print("eager fp32:", json.dumps(speed["eager_fp32"]), flush=True)
        if dev == "cuda":
            for prec in [p for p in args.precisions.split(",") if p]:
                base, *extras = prec.split("+")
                tf32, compiled = "tf32" in extras, "compile" in extras
                tag = "_".join(["fast", base, *extras])
                speed[tag] = train_once(root, rows, model_cfg, n_steps, batch, dev, base, True,
                                        tag, tf32=tf32, torch_compile=compiled)  # fmt: skip
                print(f"fast {prec}:", json.dumps(speed[tag]), flush=True)
            if "fast_fp32" in speed:
                speed["ratio_fast_vs_eager_fp32"] = round(
                    speed["fast_fp32"]["steps_per_s"] / speed["eager_fp32"]["steps_per_s"], 2
                )
                speed["final_loss_diff_fast_vs_eager_fp32"] = round(
                    abs(speed["fast_fp32"]["final_loss"] - speed["eager_fp32"]["final_loss"]), 5
                )
        summary["train_speed"] = {"model": model_cfg, "batch": batch, **speed}
        summary["replay_only_fp32"] = replay_only(rows, model_cfg, n_steps, batch, dev)
        print("replay only fp32:", json.dumps(summary["replay_only_fp32"]), flush=True)
        if share > 1:
            summary["shared_gpu"] = shared(root, rows, model_cfg, share, n_steps // 2, batch)
            print("shared:", json.dumps(summary["shared_gpu"]), flush=True)

        ckpt = (speed.get("fast_fp32") or speed["eager_fp32"])["checkpoint"]
        summary["eval_speed"] = eval_speed(ckpt, test, eval_rows, eval_batches, dev)
        print("eval:", json.dumps(summary["eval_speed"]), flush=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
