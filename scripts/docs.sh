#!/usr/bin/env bash
# Install with the docs and plots extras, then build the HTML documentation with Sphinx;
# any warning fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh docs plots
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
