#!/usr/bin/env bash
# README's main-job command: set up .venv (idempotent), then run the bundled default job.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/toy_job.py "$@"
