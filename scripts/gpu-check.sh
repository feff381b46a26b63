#!/usr/bin/env bash
# Everything a session with a GPU runs for the CUDA path, in one go (about 5 minutes on an H100):
#   1. CUDA-ON build into its own build dir, installed into a private --target dir (a developer's
#      editable install and the shared build/ stay untouched);
#   2. the nvcc register/spill report (test_cuda_compile.py -s);
#   3. the kernel test suite on the GPU, Triton interpreter off, bf16 included;
#   4. compute-sanitizer memcheck on a small decode + KV-write case;
#   5. bench/bench_kernels.py --json.
# Usage: scripts/gpu-check.sh OUTDIR   then commit OUTDIR as bench/results/<date>-<device>/.
# OUTDIR gets at most 7 files. A failing step is recorded and the rest still run; the exit status is
# nonzero if any step failed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
work=${BASTION_GPU_CHECK_DIR:-/tmp/bastion-gpu-check}
summary="$out/summary.txt"

if ! command -v nvidia-smi >/dev/null; then
  echo "gpu-check.sh: nvidia-smi not found; run this on a host with an NVIDIA GPU" >&2
  exit 1
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
  echo "nvcc: $(nvcc --version | tail -1)"
} > "$summary"

failed=()
step() {  # step NAME LOGFILE COMMAND...: run, tee to LOGFILE, record the outcome in the summary
  local name=$1 log=$2 start=$SECONDS
  shift 2
  echo "== $name"
  if "$@" 2>&1 | tee "$log"; then
    echo "$name: ok ($((SECONDS - start)) s)" >> "$summary"
  else
    echo "$name: FAILED ($((SECONDS - start)) s)" >> "$summary"
    failed+=("$name")
  fi
}

build() {
  rm -rf "$work/wheel" "$work/site"
  mkdir -p "$work"
  (cd "$repo" && CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip wheel --no-build-isolation --no-deps -w "$work/wheel" . \
    -Cbuild-dir="$work/build" -Ccmake.define.BASTION_CUDA=ON)
  pip install --no-deps --target "$work/site" "$work"/wheel/bastion-*.whl
  # An editable dev install registers an import hook that would shadow the build under test.
  cat > "$work/site/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_skbc_")]
PY
  PYTHONPATH="$work/site" python -c "
import bastion, bastion._core as core
assert core.__file__.startswith('$work/site'), f'imported the wrong bastion: {core.__file__}'
assert bastion.cuda_available(), 'the CUDA build sees no usable GPU'
print('CUDA build OK:', core.__file__)"
}
step build "$out/build.log" build
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "build failed; see $out/build.log" >&2
  exit 1
fi
export PYTHONPATH="$work/site"
unset TRITON_INTERPRET
cd "$repo"

step "nvcc resources" "$out/resources.txt" \
  python -m pytest -q -s -p no:cacheprovider tests/kernels/test_cuda_compile.py
step "kernel tests" "$out/tests.log" \
  python -m pytest -q -rs -p no:cacheprovider tests/kernels --ignore=tests/kernels/test_cuda_compile.py

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step memcheck "$out/memcheck.log" "$sanitizer" --tool memcheck --error-exitcode 1 --target-processes all \
  python -m pytest -q -p no:cacheprovider tests/kernels/test_cuda_kernels.py -k smoke

step bench "$out/bench_kernels.txt" python bench/bench_kernels.py --json "$out/bench_kernels.json"

cat "$summary"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed steps: ${failed[*]}" >&2
  exit 1
fi
