#!/usr/bin/env bash
# Install with the test extras, lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh tests
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m ruff check skfalcon tests benchmarks examples
"$PYTHON" -m pytest -q "$@"
# The documentation builds with warnings as errors.
bash scripts/docs.sh
