"""Decoding time per token on one GPU, batch 1, for the Qwen3-1.7B-shaped random model of
gpu_llm_eval.py: HF `generate` called directly (no stop criteria) vs lm-eval HFLM's
`generate_until` on one IFEval-shaped request (seed 003's batch-1 setting; the figure
gpu_llm_eval.py's batch-1 phase extrapolates IFEval from). Prints one JSON line per phase.

    python benchmarks/gpu_decode_step.py                 # one CUDA GPU
    python benchmarks/gpu_decode_step.py --cpu --tiny    # smoke test on the CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_llm_eval import IFEVAL, _sync, build_model, build_requests, hflm  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--direct-tokens", type=int, default=256)
    p.add_argument("--max-gen-toks", type=int, default=IFEVAL[2])
    args = p.parse_args(argv)
    import torch

    device = "cpu" if args.cpu else "cuda"
    max_length = 512 if args.tiny else 2048
    max_gen = min(args.max_gen_toks, 16) if args.tiny else args.max_gen_toks
    model, tok, _ = build_model(args.tiny, device, max_length)
    _, gen = build_requests(0.0001, ifeval=(IFEVAL[0], IFEVAL[1], max_gen), n_gen=1)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    ids = torch.tensor([tok(gen[0].args[0])["input_ids"]], device=device)
    n = args.direct_tokens
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        _sync()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        _sync()
    out["direct_generate_ms_per_token"] = 1000 * (time.perf_counter() - t0) / n
    print(json.dumps(out), flush=True)
    lm = hflm(model, tok, 1, device, max_length)
    _sync()
    t0 = time.perf_counter()
    lm.generate_until(gen, disable_tqdm=True)
    _sync()
    out["hflm_batch1_ifeval_s"] = time.perf_counter() - t0
    out["hflm_batch1_ms_per_token"] = 1000 * out["hflm_batch1_ifeval_s"] / max_gen
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
