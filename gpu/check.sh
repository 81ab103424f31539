#!/usr/bin/env bash
# The GPU check (issue 13): the CUDA tests and `python -m eval bench` on the GPU, in under 8 minutes
# on one H100 / H200, with nothing downloaded there. Figures go to docs/speed.md with the hardware named.
#
# Here, once (wheels for the GPU machine's Python 3.12; .whl/ is git-ignored):
#   bash gpu/fetch_wheels.sh
# With the device tool (carry .whl; $OUT comes back):
#   run(command="bash gpu/check.sh", carry=[".whl"], timeout_s=540)
# A dry run on this CPU (tiny sizes, same code path, what CI tests):
#   bash gpu/check.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLOWUP_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
PYTHON=${PYTHON:-python3}

if [ "${1:-}" != "--dry-run" ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The codec's weights travel inside the package (flowup/pretrained/taef2).

if [ "${1:-}" = "--dry-run" ]; then
    device=cpu
    bench=(--device cpu --sizes 64 --x4-sizes 32 --repeats 1 --peers none --no-torch-row)
else
    device=cuda
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true
    bench=(--device cuda --sizes 512 1024 --x4-sizes 256 512 --repeats 10 --peers none)
fi
"$PYTHON" - <<'PY' | tee "$OUT/environment.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY
echo "== CUDA tests"
set +e
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
set -e
echo "== benchmark ($device)"
timeout 300 "$PYTHON" -m eval bench "${bench[@]}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
echo "CUDA tests exit status: $tests; results in $OUT/ (bench.md, bench.json, tests.log)"
exit "$tests"
