#!/usr/bin/env bash
# Build bastion._core with BASTION_CUDA=ON (csrc/cuda/*.cu for sm_90a, static cudart) in its own
# build dir and check that the module imports on this GPU-less host without linking libcuda.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BASTION_CUDA_CHECK_DIR:-/tmp/bastion-cuda-check}
rm -rf "$work/wheel" "$work/site"
mkdir -p "$work"
export PATH="$PATH:/usr/local/cuda/bin"
start=$SECONDS
python -m pip wheel -q --no-build-isolation --no-deps -w "$work/wheel" . \
  -Cbuild-dir="$work/build" -Ccmake.define.BASTION_CUDA=ON
python -m pip install -q --no-deps --target "$work/site" "$work"/wheel/bastion-*.whl
so=$(ls "$work"/site/bastion/_core*.so)
if ldd "$so" | grep -E 'libcuda\.so|libcudart\.so'; then
  echo "check-cuda-build: $so links libcuda/libcudart dynamically; it must use static cudart" >&2
  exit 1
fi
cat > "$work/site/sitecustomize.py" <<'PY'
import sys  # an editable dev install's import hook would shadow the build under test
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_skbc_")]
PY
PYTHONPATH="$work/site" python - <<'PY'
import bastion
from bastion import _core
assert _core.with_cuda, "the CUDA build did not compile the CUDA kernels in"
from bastion.ops.cuda_archs import runs_on
assert runs_on((9, 0), _core.cuda_archs), f"the build targets {_core.cuda_archs}, not the H100/H200 (sm_90)"
print(f"CUDA build imports: with_cuda={_core.with_cuda} cuda_archs={_core.cuda_archs} "
      f"cuda_available={bastion.cuda_available()}")
PY
echo "check-cuda-build: ok in $((SECONDS - start)) s"
