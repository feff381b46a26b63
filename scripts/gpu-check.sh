#!/usr/bin/env bash
# Everything a session with a GPU runs for the CUDA path (steps, by name):
#   build     CUDA-ON build into its own build dir, installed into a private --target dir (a developer's
#             editable install and the shared build/ stay untouched);
#   resources the nvcc register/spill report (test_cuda_compile.py -s);
#   tests     the kernel test suite on the GPU, Triton interpreter off, bf16 included;
#   engine    the engine on the GPU: CUDA-graph replay against eager (tests/engine/test_cuda_graphs.py);
#   memcheck  compute-sanitizer memcheck on a small decode + KV-write case;
#   bench     python -m bench.bench_kernels --json;
#   e2e       python -m bench.bench_e2e --device cuda --json (SmolLM2 and a random Llama-1B shape, HF when installed).
# Usage: scripts/gpu-check.sh OUTDIR [STEP...]   (default: every step), then commit OUTDIR as
# bench/results/<date>-<device>/. Naming steps splits a run that would not fit one time-limited call:
# later calls without "build" reuse the installed build of an earlier one ($BASTION_GPU_CHECK_DIR).
# OUTDIR gets at most 10 files. A failing step is recorded and the rest still run; the exit status is
# nonzero if any step failed.
set -euo pipefail
# nvcc is often installed but not on PATH; CMake's CUDA detection looks only on PATH (and $CUDA_PATH/bin).
export PATH="$PATH:/usr/local/cuda/bin"

all_steps=(build resources tests engine memcheck bench e2e)
if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUTDIR [STEP...]   STEP: ${all_steps[*]} (default: all)" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=("${all_steps[@]}")
for s in "${steps[@]}"; do
  [[ " ${all_steps[*]} " == *" $s "* ]] || { echo "gpu-check.sh: unknown step '$s' (steps: ${all_steps[*]})" >&2; exit 2; }
done
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }
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
  echo "steps: ${steps[*]}"
} >> "$summary"

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
if want build; then
  step build "$out/build.log" build
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "build failed; see $out/build.log" >&2
    exit 1
  fi
elif [[ ! -d "$work/site/bastion" ]]; then
  echo "gpu-check.sh: no build in $work/site; run the 'build' step first" >&2
  exit 1
fi
export PYTHONPATH="$work/site"
unset TRITON_INTERPRET
cd "$repo"

want resources && step "nvcc resources" "$out/resources.txt" \
  python -m pytest -q -s -p no:cacheprovider tests/kernels/test_cuda_compile.py
want tests && step "kernel tests" "$out/tests.log" \
  python -m pytest -q -rs -p no:cacheprovider tests/kernels --ignore=tests/kernels/test_cuda_compile.py
want engine && step "engine tests" "$out/engine_tests.log" \
  python -m pytest -q -rs -p no:cacheprovider tests/engine/test_cuda_graphs.py

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
want memcheck && step memcheck "$out/memcheck.log" "$sanitizer" --tool memcheck --error-exitcode 1 \
  --target-processes all python -m pytest -q -p no:cacheprovider tests/kernels/test_cuda_kernels.py -k smoke

# stdout (the JSON object) to its own file; progress bars and warnings go to the log
want bench && step bench "$out/bench_kernels.log" \
  bash -c 'python -m bench.bench_kernels --json > "$1"' _ "$out/bench_kernels.json"
want e2e && step "bench e2e" "$out/bench_e2e.log" \
  bash -c 'python -m bench.bench_e2e --device cuda --json > "$1"' _ "$out/bench_e2e.json"

cat "$summary"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed steps: ${failed[*]}" >&2
  exit 1
fi
