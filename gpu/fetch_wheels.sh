#!/usr/bin/env bash
# Wheels that the GPU machine lacks (it has no network): diffusers and jsonargparse at the versions of
# this venv, for its Python 3.12, into .whl/ (git-ignored). The TAEF2 codec weights ship inside the
# package (flowup/pretrained/taef2). Run here, once, before gpu/check.sh travels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
diffusers=$("$PYTHON" -c "import diffusers; print(diffusers.__version__)")
jsonargparse=$("$PYTHON" -c "import jsonargparse; print(jsonargparse.__version__)")
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .whl "diffusers==$diffusers" "jsonargparse==$jsonargparse" importlib_metadata
du -sh .whl
