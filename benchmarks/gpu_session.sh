#!/usr/bin/env bash
# Every GPU figure the open issues ask for, in ONE call of the lent GPU machine (a session has
# 15 minutes of device time, the machine's start included):
#   here:    bash benchmarks/gpu_wheels.sh            # TRL, lm-eval, ... as wheels in .whl/
#   device:  run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
#   here:    GPU_SESSION_CPU=1 bash benchmarks/gpu_session.sh   # the same parts, small, on CPU
# Parts run one after another, each under its own time limit (they add up to 630 s), so one
# slow part cannot starve the rest; summary.txt lists each part's exit status and seconds.
# Logs and JSON go to $OUT (at most 8 files come back from the device).
# GPU_SESSION_PARTS="launch llm" runs only those parts; GPU_SESSION_LLM_S the llm part's limit,
# GPU_SESSION_WORLD_S the world part's, GPU_SESSION_WORLD_ARGS extra gpu_world.py arguments,
# GPU_SESSION_LLM_ARGS extra gpu_llm_eval.py arguments.
# Measured so far: one H100 (2026-11-26) device_tests, pcgrad, world; one H200 (2026-11-27)
# device_tests, world (fp32, bf16_weights, +compile), launch and llm, complete; one H100
# (2026-11-27) llm with all of IFEval at the static cache (8.7 min per checkpoint; its batch-1
# IFEval generation cut at 540 s, then timed by benchmarks/gpu_decode_step.py)
# (benchmarks/measured/*/). Next session, while the machine stays warm (900 s in all):
#   GPU_SESSION_PARTS="llm" GPU_SESSION_LLM_S=540
#   GPU_SESSION_LLM_ARGS="--ifeval-count 541 --generation-cache dynamic --sample-gen 1"
#     (the static cache's gain over lm-eval's dynamic one at full size, not yet measured; the
#     batch-1 generation needs ~75 s beyond 540 s, gpu_decode_step.py times it alone), then
#     GPU_SESSION_PARTS="pcgrad" (the in-place PCGrad buffer on CUDA) if time is left
#   device_tests  tests/test_device.py: the CUDA paths (training, captured decode) vs eager
#   pcgrad        benchmarks/pcgrad_step.py: PCGrad vs baseline step time, 2/4/7 tasks (issue 11)
#   world         benchmarks/gpu_world.py: training steps/s, evaluator rows/s (issue 8)
#   launch        benchmarks/gpu_world.py --launch-only: the paper model's training called directly
#                 vs through torchrun and ftlab.launch's worker, one process (issue 14)
#   llm           benchmarks/gpu_llm_eval.py on a twentieth of the requests, minutes per
#                 checkpoint extrapolated; TRL SFT/GRPO steps on the GPU (issues 10, 14)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CPU=${GPU_SESSION_CPU:-}
if [ -z "$CPU" ] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  # The carried transformers is newer than the image's; if it cannot import there (a dependency
  # of the image too old), fall back to the image's own rather than lose every part.
  if ! "$PY" -c "import transformers, trl, lm_eval, datasets" > /tmp/import_check.log 2>&1; then
    tail -3 /tmp/import_check.log
    rm -rf /tmp/site/transformers /tmp/site/transformers-*.dist-info
    echo "carried transformers did not import; using the image's"
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

PARTS=" ${GPU_SESSION_PARTS:-device_tests pcgrad world launch llm} "  # e.g. GPU_SESSION_PARTS="world llm"
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  [[ $PARTS == *" $name "* ]] || return 0
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc, $(($(date +%s) - start)) s (limit $limit s)" >> "$OUT/summary.txt"
}

{
  date -u
  git rev-parse HEAD 2> /dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2> /dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
} > "$OUT/summary.txt" 2>&1
if [ -n "$CPU" ]; then
  part device_tests 120 "$PY" -m pytest -q tests/test_device.py
  part pcgrad 120 "$PY" benchmarks/pcgrad_step.py --device cpu --steps 3 --warmup 1 --tasks 2 4
  part world 300 "$PY" benchmarks/gpu_world.py --cpu --json "$OUT/world.json"
  part launch 120 "$PY" benchmarks/gpu_world.py --cpu --launch-only
  part llm 300 "$PY" benchmarks/gpu_llm_eval.py --cpu --tiny --json "$OUT/llm.json"
else
  part device_tests 150 "$PY" -m pytest -q tests/test_device.py
  part pcgrad 40 "$PY" benchmarks/pcgrad_step.py --device cuda --steps 50 --warmup 5
  part world "${GPU_SESSION_WORLD_S:-200}" "$PY" benchmarks/gpu_world.py --json "$OUT/world.json" \
    ${GPU_SESSION_WORLD_ARGS:-}
  part launch 70 "$PY" benchmarks/gpu_world.py --launch-only
  part llm "${GPU_SESSION_LLM_S:-170}" "$PY" benchmarks/gpu_llm_eval.py --fraction 0.05 \
    --sample 10 --sample-gen 1 --json "$OUT/llm.json" ${GPU_SESSION_LLM_ARGS:-}
fi
cat "$OUT/summary.txt"
