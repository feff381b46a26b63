#!/usr/bin/env bash
# The test suite, as the README gives it. Runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Two workers on two cores; each worker single-threaded so they do not fight over the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# -p no:cacheprovider keeps a clean clone clean; the timeout guards against hangs.
exec python -m pytest -q -p no:cacheprovider -n "${BASTION_TEST_WORKERS:-2}" --timeout=900 "$@"
