#!/usr/bin/env bash
# Build bastion._core with AddressSanitizer + UBSan (and the scheduler's per-step invariant
# checks) into a separate build dir, then run tests/core and the CPU kernel / decoder-program tests
# (C++ over raw pointers into torch tensors and the model's weights) against that build.
#
# The main editable install (build/) is never touched: the sanitized wheel is unpacked under
# $SAN_ROOT and put first on PYTHONPATH, and a sitecustomize there drops the editable-install
# import redirect for this process only.
#
#   bash scripts/test-sanitizers.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

SAN_ROOT="${BASTION_SAN_ROOT:-/tmp/bastion-sanitize}"
BUILD_DIR="$SAN_ROOT/build"
WHEEL_DIR="$SAN_ROOT/wheel"
PKG_DIR="$SAN_ROOT/pkg"

echo "[sanitize] building into $BUILD_DIR"
rm -rf "$WHEEL_DIR" "$PKG_DIR"
mkdir -p "$BUILD_DIR" "$WHEEL_DIR" "$PKG_DIR"
BASTION_SANITIZE=ON pip wheel . --no-build-isolation --no-deps -q -w "$WHEEL_DIR" \
  -C build-dir="$BUILD_DIR" \
  -C cmake.define.CMAKE_CXX_FLAGS=-DBASTION_CHECK_INVARIANTS

python - "$WHEEL_DIR" "$PKG_DIR" <<'PY'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("bastion-*.whl"))
zipfile.ZipFile(wheel).extractall(sys.argv[2])
PY

cat > "$PKG_DIR/sitecustomize.py" <<'PY'
"""Sanitizer runs only: let PYTHONPATH's sanitized bastion win over the editable install."""
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
PY

# Python itself is not instrumented, so the ASan runtime must be loaded before anything else.
# libstdc++ is preloaded too: ASan's __cxa_throw interceptor resolves the real one at start-up,
# and python does not link libstdc++, so without it the first C++ exception aborts.
# CPython keeps objects alive until exit by design: leak reports would be noise.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$PKG_DIR${PYTHONPATH:+:$PYTHONPATH}"

python - "$PKG_DIR" <<'PY'
import sys
import bastion._core as core
assert core.__file__.startswith(sys.argv[1]), f"not the sanitized build: {core.__file__}"
print("[sanitize] testing", core.__file__)
PY
# Timings under ASan mean nothing, so the ratio benchmark is left out.
echo "[sanitize] running tests/core and the CPU kernel and decoder-program tests under ASan+UBSan"
python -m pytest tests/core tests/ops tests/model/test_cpu_decoder.py -q -p no:cacheprovider \
  --ignore=tests/core/test_bench_core.py "$@"
