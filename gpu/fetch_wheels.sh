#!/usr/bin/env bash
# Wheels that the GPU machine lacks (it has no network): diffusers and jsonargparse at the versions of
# this venv, for its Python 3.12, into .whl/ (git-ignored), plus a copy of the TAEF2 codec weights
# from ../shared when the package does not ship them. Run here, once, before gpu/check.sh travels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
diffusers=$("$PYTHON" -c "import diffusers; print(diffusers.__version__)")
jsonargparse=$("$PYTHON" -c "import jsonargparse; print(jsonargparse.__version__)")
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .whl "diffusers==$diffusers" "jsonargparse==$jsonargparse" importlib_metadata
if ! ls flowup/pretrained/taef2/*.safetensors >/dev/null 2>&1 && [ -d ../shared/weights/taef2 ]; then
    mkdir -p .whl/taef2 && cp ../shared/weights/taef2/{encoder.pth,decoder.pth,LICENSE} .whl/taef2/
fi
du -sh .whl
