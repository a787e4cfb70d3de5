#!/usr/bin/env bash
# Set up .venv for ftlab on a fresh machine (idempotent).
# torch goes in FIRST and every later pip call is constrained (constraints.txt): an
# unconstrained resolver would pull a multi-GB CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip="./.venv/bin/python -m pip --disable-pip-version-check -q"
$pip install --upgrade pip
$pip install "torch==2.13.0"
$pip install -c constraints.txt -e ".[dev,llm,slurm]"
echo "setup.sh: .venv ready ($(./.venv/bin/python -c 'import torch, snakemake; print("torch", torch.__version__, "snakemake", snakemake.__version__)'))"
