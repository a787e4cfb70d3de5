"""Speed of one checkpoint's 10-benchmark evaluation on one GPU: the project's evaluation vs
lm-eval's HF backend at batch size 1 (seed 003: ~1.5 h per checkpoint on one A100), in one run;
then TRL SFT and GRPO steps of the tiny study on the GPU in bf16.

    python benchmarks/gpu_llm_eval.py                     # one CUDA GPU (no download needed)
    python benchmarks/gpu_llm_eval.py --cpu --tiny        # smoke test of the same code on the CPU

Model: a random-initialised model of Qwen3-1.7B's architecture (28 layers, hidden 2048, 16
query / 8 key-value heads, vocab 151,936, bf16), built in memory. The tokenizer is the project's
character tokenizer (ftlab.llm.tiny), so a synthetic request of L characters is L tokens: the
requests below are sized in tokens. Outputs are noise; the compute per request is the real one.

Requests: shaped like seed 003's ten benchmarks, 0-shot - per benchmark its number of documents,
choices per document (one context shared by its choices, as multiple-choice tasks do, so
lm-eval's one-token-continuation logits cache applies to MMLU/BoolQ as on real data) and typical
context / continuation lengths in tokens (estimates for Qwen3's tokenizer; see SHAPES). That is
131,148 loglikelihood requests and IFEval's 541 generations (max_gen_toks 1,280, lm-eval's ifeval
setting; a random model rarely stops early, so generation is an upper bound).

Measured, in one process, same model object:
  1. lm-eval HFLM at batch size 1 (seed 003's setting) on a sample of each benchmark
     (--sample documents, --sample-gen generations); minutes per checkpoint extrapolated from the
     per-request time of each benchmark times its full count.
  2. The project's evaluation: ftlab's CachedLM (per-sample cache in one sqlite file per
     checkpoint, chunks committed as they finish) over HFLM with batch_size "auto", on ALL
     requests (or --fraction of them), from an empty cache: requests/s and minutes.
  3. TRL SFT and GRPO of the tiny study (ftlab.llm.train) for --train-steps steps: steps/s and
     the precision used (bf16 on the GPU).
Prints a table and a JSON summary (also written with --json PATH). Exit 1 on a GPU run whose
model did not run on cuda.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# benchmark -> (documents, choices per document, context tokens, continuation tokens); 0-shot
SHAPES = {
    "arc_challenge": (1172, 4, 32, 6),
    "arc_easy": (2376, 4, 26, 5),
    "hellaswag": (10042, 4, 75, 25),
    "winogrande": (1267, 2, 22, 8),
    "piqa": (1838, 2, 18, 24),
    "boolq": (3270, 2, 150, 1),
    "openbookqa": (500, 4, 16, 6),
    "truthfulqa_mc2": (817, 7.19, 330, 12),  # mean 7.19 true+false answers; QA primer prompt
    "mmlu": (14042, 4, 110, 1),
}
IFEVAL = (541, 45, 1280)  # prompts, prompt tokens, max_gen_toks
LETTERS = "abcdefghijklmnopqrstuvwxyz     "


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(max(1, n)))


def build_requests(fraction: float = 1.0, seed: int = 0, ifeval=IFEVAL, n_gen: int | None = None):
    """lm-eval Instances: {benchmark: [loglikelihood requests]}, [generate_until requests]
    (`n_gen` generations, else the `fraction` of IFEval's)."""
    from lm_eval.api.instance import Instance

    rng = random.Random(seed)
    ll: dict[str, list] = {}
    for bench, (docs, choices, ctx, cont) in SHAPES.items():
        n_docs = max(1, round(docs * fraction))
        reqs = []
        for d in range(n_docs):
            k = int(choices) + (rng.random() < choices - int(choices))
            context = _text(rng, int(rng.gauss(ctx, ctx / 4)))
            for c in range(k):
                cont_text = " " + _text(rng, max(1, int(rng.gauss(cont, cont / 4))) - 1)
                reqs.append(Instance("loglikelihood", doc={}, arguments=(context, cont_text),
                                     idx=c, metadata=(bench, d, 1)))  # fmt: skip
        ll[bench] = reqs
    full_gen, prompt, max_gen = ifeval
    n_gen = n_gen if n_gen is not None else max(1, round(full_gen * fraction))
    gen = [
        Instance("generate_until", doc={}, idx=0, metadata=("ifeval", i, 1),
                 arguments=(_text(rng, prompt), {"until": [], "max_gen_toks": max_gen,
                                                 "do_sample": False}))
        for i in range(n_gen)
    ]  # fmt: skip
    return ll, gen


def full_counts() -> dict[str, float]:
    """Expected full-size request counts per benchmark (loglikelihood) and ifeval (generations)."""
    out = {b: docs * choices for b, (docs, choices, _, _) in SHAPES.items()}
    out["ifeval"] = IFEVAL[0]
    return out


def build_model(tiny: bool, device: str, max_length: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from ftlab.llm.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer(model_max_length=max_length)
    if tiny:
        cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, max_position_embeddings=max_length)  # fmt: skip
    else:  # Qwen/Qwen3-1.7B's config.json
        cfg = Qwen3Config(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                          num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                          head_dim=128, max_position_embeddings=40960, rope_theta=1000000,
                          tie_word_embeddings=True, rms_norm_eps=1e-6)  # fmt: skip
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    )  # fmt: skip
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).to(dtype)
    model.eval()
    return model, tok, sum(p.numel() for p in model.parameters())


def hflm(model, tok, batch_size, device: str, max_length: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=device,
                max_length=max_length, max_batch_size=256)  # fmt: skip


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_batch1(model, tok, device, max_length, ll, gen, sample: int, sample_gen: int) -> dict:
    """lm-eval HFLM at batch 1 on the first `sample` documents of each benchmark."""
    lm = hflm(model, tok, 1, device, max_length)
    per_request, measured = {}, {}
    for bench, reqs in ll.items():
        docs = sorted({r.metadata[1] for r in reqs})[:sample]
        part = [r for r in reqs if r.metadata[1] in set(docs)]
        _sync()
        t0 = time.perf_counter()
        lm.loglikelihood(part, disable_tqdm=True)
        _sync()
        dt = time.perf_counter() - t0
        per_request[bench], measured[bench] = dt / len(part), (len(part), dt)
        print(f"batch 1, {bench}: {len(part)} requests in {dt:.1f} s", flush=True)
    part = gen[:sample_gen]
    t0 = time.perf_counter()
    lm.generate_until(part, disable_tqdm=True)
    _sync()
    dt = time.perf_counter() - t0
    per_request["ifeval"], measured["ifeval"] = dt / len(part), (len(part), dt)
    counts = full_counts()
    minutes = sum(per_request[b] * counts[b] for b in counts) / 60
    return {"per_request_s": per_request, "measured": measured,
            "minutes_per_checkpoint_extrapolated": minutes}  # fmt: skip


def time_project(model, tok, device, max_length, ll, gen, cache_dir: Path,
                 generation_cache: str = "dynamic") -> dict:  # fmt: skip
    """ftlab's CachedLM over HFLM(batch_size="auto") on every request, from an empty cache.

    One call per benchmark, so HFLM detects its batch size once per benchmark (a few forward
    passes at the longest request); a real evaluation sends every task's loglikelihood
    requests in one call and detects once. The detections are timed apart (detect_s) so the
    extrapolation scales only the scoring and counts one detection per request type."""
    from ftlab.llm.cache import CachedLM, SampleCache

    lm = hflm(model, tok, "auto", device, max_length)
    detect = {"s": 0.0}
    detect_batch_size = lm._detect_batch_size

    def timed_detect(*args, **kwargs):
        _sync()
        t0 = time.perf_counter()
        try:
            return detect_batch_size(*args, **kwargs)
        finally:
            _sync()
            detect["s"] += time.perf_counter() - t0

    lm._detect_batch_size = timed_detect
    out, detect_s = {}, {}
    with SampleCache(cache_dir / "checkpoint-0.sqlite") as cache:
        clm = CachedLM(lm, cache, "benchmark-model", generation_cache=generation_cache)
        t_all = time.perf_counter()
        for bench, reqs in ll.items():
            _sync()
            detect["s"] = 0.0
            t0 = time.perf_counter()
            clm.loglikelihood(reqs)
            _sync()
            out[bench], detect_s[bench] = (len(reqs), time.perf_counter() - t0), detect["s"]
            print(f"project, {bench}: {len(reqs)} requests in {out[bench][1]:.1f} s "
                  f"(batch-size detection {detect['s']:.1f} s)", flush=True)  # fmt: skip
        detect["s"] = 0.0
        t0 = time.perf_counter()
        static_error = None
        try:
            clm.generate_until(gen)
        except Exception as err:  # noqa: BLE001 - one device call: keep the run's other figures
            if generation_cache == "dynamic":
                raise
            # a static cache that fails to compile or run on this device: say why, and time
            # lm-eval's dynamic cache instead of losing the phase (the session has one call)
            static_error = f"{type(err).__name__}: {err}"[:500]
            print(f"static generation cache failed ({static_error}); timing dynamic", flush=True)
            generation_cache = clm.generation_cache = "dynamic"
            t0 = time.perf_counter()
            clm.generate_until(gen)
        _sync()
        out["ifeval"], detect_s["ifeval"] = (len(gen), time.perf_counter() - t0), detect["s"]
        total = time.perf_counter() - t_all
        batch_sizes = clm.batch_sizes_used
    n_ll = sum(n for b, (n, _) in out.items() if b != "ifeval")
    t_ll = sum(t - detect_s[b] for b, (_, t) in out.items() if b != "ifeval")
    return {"per_benchmark": out, "detect_s": detect_s, "total_s": total,
            "loglikelihood_requests_per_s": n_ll / t_ll,
            "generations_per_s": out["ifeval"][0] / (out["ifeval"][1] - detect_s["ifeval"]),
            "batch_sizes_used": batch_sizes, "generation_cache": generation_cache,
            "static_cache_error": static_error}  # fmt: skip


def extrapolate_minutes(proj: dict, counts: dict) -> tuple[float, float]:
    """(minutes, naive minutes) of the full-size evaluation from the project's measured part:
    scoring time scaled to the full counts plus one batch-size detection per request type
    (the longest loglikelihood one, IFEval's); naive scales the detections too."""
    per, det = proj["per_benchmark"], proj["detect_s"]
    scored = sum(counts[b] * (t - det[b]) / n for b, (n, t) in per.items())
    once = max(d for b, d in det.items() if b != "ifeval") + det["ifeval"]
    naive = sum(counts[b] * t / n for b, (n, t) in per.items())
    return (scored + once) / 60, naive / 60


def time_training(device: str, steps: int, tmp: Path) -> dict:
    """TRL SFT and GRPO of the tiny study through ftlab.llm.train: steps/s and the precision."""
    from ftlab.config import validate_config
    from ftlab.llm import data, tiny, train
    from ftlab.llm.recipes import GRPORecipe, SFTRecipe, resolve_bf16

    base = tiny.build_tiny_causal_lm(tmp / "base", seed=0, layers=2, hidden=64, heads=4,
                                     max_length=512)  # fmt: skip
    rows = data.load_rows(data.write_fixtures(tmp / "data", n_train=64, n_test=8)["gsm8k"],
                          "gsm8k")  # fmt: skip
    data.write_jsonl(tmp / "rows.jsonl", rows)
    data.write_jsonl(tmp / "sft.jsonl", data.sft_records(rows, "gt"))
    llm = validate_config({"kind": "llm", "study": "b", "llm": {
        "datasets": {"g": {"format": "gsm8k", "train": "a", "test": "b"}},
        "sft": {"max_steps": steps, "save_steps": steps, "batch_size": 8, "grad_accum": 1,
                "max_length": 256, "lr": 1e-4},
        "grpo": {"max_steps": steps, "save_steps": steps, "batch_size": 8, "lr": 1e-5,
                 "num_generations": 4, "max_completion_length": 32}}})["llm"]  # fmt: skip
    out = {}
    for name, recipe, kw in (
        ("sft", SFTRecipe.from_config(llm["sft"]), {"records_path": str(tmp / "sft.jsonl")}),
        ("grpo", GRPORecipe.from_config(llm["grpo"]),
         {"rows_path": str(tmp / "rows.jsonl"), "fmt": "gsm8k"}),
    ):  # fmt: skip
        t0 = time.perf_counter()
        fn = train.run_sft if name == "sft" else train.run_grpo
        fn(recipe, base_model=str(base), out_dir=str(tmp / f"{name}_out"),
           state_dir=str(tmp / f"{name}_state"), seed=1, **kw)  # fmt: skip
        dt = time.perf_counter() - t0
        meta = json.loads(next((tmp / f"{name}_out").glob("checkpoint-*/ftlab_checkpoint.json"))
                          .read_text())  # fmt: skip
        out[name] = {"steps": steps, "seconds": dt, "steps_per_s": steps / dt,
                     "bf16": resolve_bf16(recipe.bf16),
                     "hyperparameters_bf16": meta["hyperparameters"]["bf16"]}  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer model and 1%% of the requests")
    p.add_argument("--fraction", type=float, default=None, help="share of the requests (1.0)")
    p.add_argument("--sample", type=int, default=None, help="batch-1 documents per benchmark")
    p.add_argument("--sample-gen", type=int, default=None, help="batch-1 IFEval generations")
    p.add_argument("--max-gen-toks", type=int, default=IFEVAL[2])
    p.add_argument("--ifeval-count", type=int, default=None,
                   help="generations in the project's phase (541: IFEval at full size, as "
                        "many per batch as the generation batch size allows; default: "
                        "--fraction of 541)")  # fmt: skip
    p.add_argument(
        "--generation-cache",
        choices=("dynamic", "static"),
        default="dynamic",
        help="the project's KV cache for IFEval (llm.lm_eval.generation_cache)",
    )
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    if not args.cpu and device == "cpu":
        print("no CUDA GPU visible: run with --cpu for the smoke test", file=sys.stderr)
        return 1
    small = args.tiny or args.cpu
    fraction = args.fraction or (0.002 if small else 1.0)
    sample = args.sample or (2 if small else 40)
    sample_gen = args.sample_gen or (1 if small else 3)
    max_gen = min(args.max_gen_toks, 16) if small else args.max_gen_toks
    train_steps = args.train_steps or (2 if small else 20)
    max_length = 512 if small else 2048
    model, tok, n_params = build_model(args.tiny, device, max_length)
    if device == "cuda" and next(model.parameters()).device.type != "cuda":
        print("model is not on the GPU", file=sys.stderr)
        return 1
    ll, gen = build_requests(fraction, ifeval=(IFEVAL[0], IFEVAL[1], max_gen),
                             n_gen=args.ifeval_count)  # fmt: skip
    print(f"model: {n_params / 1e9:.3f} B parameters on {device}; requests: "
          f"{sum(map(len, ll.values()))} loglikelihood + {len(gen)} generations "
          f"(fraction {fraction}, max_gen_toks {max_gen})")  # fmt: skip
    summary = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
               "parameters": n_params, "fraction": fraction, "max_gen_toks": max_gen}  # fmt: skip

    def keep(key, value):  # each phase's figures are printed and saved as soon as they exist
        summary[key] = value
        text = json.dumps(summary, indent=2, default=str)
        print(f"{key}: {json.dumps(value, default=str)}", flush=True)
        if args.json:
            args.json.write_text(text)

    # Shortest phase first, so a run cut short by its time limit still reports something.
    with tempfile.TemporaryDirectory() as tmp:
        keep("training", time_training(device, train_steps, Path(tmp)))
        proj = time_project(model, tok, device, max_length, ll, gen, Path(tmp),
                            args.generation_cache)  # fmt: skip
        counts = full_counts()
        minutes, naive = extrapolate_minutes(proj, counts)
        proj["minutes_per_checkpoint_extrapolated"] = minutes
        proj["minutes_naive_detection_scaled_too"] = naive
        keep("project", proj)
    b1 = time_batch1(model, tok, device, max_length, ll, gen, sample, sample_gen)
    # Extrapolation uses seed 003's counts at the generation length measured here.
    keep("lm_eval_batch1", b1)
    print(f"\n{'benchmark':<16} {'full count':>10} {'batch-1 req/s':>14} {'project req/s':>14}")
    for bench, count in full_counts().items():
        n, t = proj["per_benchmark"][bench]
        rate = n / (t - proj["detect_s"][bench])  # scoring alone, as the extrapolation
        print(f"{bench:<16} {count:>10.0f} {1 / b1['per_request_s'][bench]:>14.2f} {rate:>14.2f}")
    speedup = b1["minutes_per_checkpoint_extrapolated"] / minutes
    print(f"\nminutes per checkpoint (10 benchmarks, full size): lm-eval batch 1 "
          f"{b1['minutes_per_checkpoint_extrapolated']:.1f}, project {minutes:.1f} "
          f"({speedup:.1f}x); goal <= 10 on one H100")  # fmt: skip
    for name, r in summary["training"].items():
        print(f"TRL {name}: {r['steps_per_s']:.2f} steps/s, bf16 {r['bf16']}")
    summary["speedup"] = speedup
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if math.isfinite(speedup) else 1


if __name__ == "__main__":
    raise SystemExit(main())
