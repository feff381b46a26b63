#!/usr/bin/env bash
# The test suite, as the README gives it. Runs from the repository root.
#   bash scripts/test.sh            everything: core micro-benchmarks alone, then the rest on 2 workers
#   bash scripts/test.sh ARGS...    pytest ARGS on 2 workers (e.g. a single directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Two workers on two cores; each worker single-threaded so they do not fight over the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
common=(-q -rs -p no:cacheprovider --timeout=900)  # -rs: every skip with its reason
if [ $# -eq 0 ]; then
  # pytest-benchmark switches itself off under xdist, so its micro-benchmarks run in one process first.
  python -m pytest "${common[@]}" -p no:xdist tests/core/test_bench_core.py
  set -- --ignore=tests/core/test_bench_core.py
fi
exec python -m pytest "${common[@]}" -n "${BASTION_TEST_WORKERS:-2}" "$@"
