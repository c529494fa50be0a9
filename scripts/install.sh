#!/usr/bin/env bash
# Install skfalcon (editable) with the extras named as arguments, e.g. `install.sh tests plots`.
# When no torch is present, the pinned CPU build goes in first: an unpinned torch would pull
# several GB of CUDA packages. The package itself declares a normal torch range.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
extras=$(IFS=,; echo "$*")
"$PYTHON" -m pip install --quiet -e ".${extras:+[$extras]}"
