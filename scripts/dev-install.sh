#!/usr/bin/env bash
# Rebuild and (re)install bastion in editable mode. Serialised with a lock so that parallel
# developers/agents on one machine never run two builds in the same build dir at once.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/bastion-build.lock pip install --no-build-isolation --no-deps -q -e . "$@"
