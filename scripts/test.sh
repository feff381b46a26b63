#!/usr/bin/env bash
# The test suite, as the README gives it. Runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# -p no:cacheprovider keeps a clean clone clean; timeouts guard against hangs.
exec python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
