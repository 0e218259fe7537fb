#!/usr/bin/env bash
# README's test command: set up .venv (idempotent), then run the whole test suite.
# Extra arguments go to pytest (e.g. `bash tools/run_tests.sh -m "not slow" -x`).
#
# The tests run in one pytest-xdist worker per core (at most 4; MMTRANSNEXT_TEST_WORKERS or `-n` overrides):
# most of the suite's time is single-threaded Python (imports, subprocess start-up, data pipelines), which
# leaves a core idle. Each worker gives torch its share of the cores (tests/conftest.py), so two torch jobs
# never compete for the same core.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
CORES="$(nproc)"
WORKERS="${MMTRANSNEXT_TEST_WORKERS:-$((CORES < 4 ? CORES : 4))}"
exec "$ROOT/.venv/bin/python" -m pytest -n "$WORKERS" --dist loadgroup "$@"
