#!/usr/bin/env bash
# README's test command: set up .venv (idempotent), then run the whole test suite.
# Extra arguments go to pytest (e.g. `bash tools/run_tests.sh -m "not slow" -x`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
