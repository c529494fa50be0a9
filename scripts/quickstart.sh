#!/usr/bin/env bash
# The main job: install, then simulate, fit, sample and summarize a posterior.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${PYTHON:-python3}" examples/quickstart.py "$@"
