#!/usr/bin/env bash
# The wheels tools/gpu_check.sh installs on a GPU machine that reaches no package registry and has torch, Triton,
# numpy, opencv, pyyaml, rich and pytest but not mmengine / mmcv (the lent H200: python3 3.12). Run it where pip
# reaches PyPI; it fills .whl/ (ignored by git: add `/.whl/` to .git/info/exclude) for that machine's Python.
#
#   bash tools/gpu_wheels.sh [PYTHON_VERSION]      (default 3.12)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYVER="${1:-3.12}"
PY="${MMTRANSNEXT_PYTHON:-$(command -v python3)}"
mkdir -p "$ROOT/.whl"
# mmengine and its pure-Python needs; mmcv-lite is mmcv's Python part (DropPath), all the backbone imports
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d "$ROOT/.whl" \
    mmengine==0.10.7 addict termcolor yapf platformdirs tomli
# mmcv-lite 2.1.0 is a source distribution: build its (pure-Python) wheel here
"$PY" -m pip wheel -q --no-deps -w "$ROOT/.whl" mmcv-lite==2.1.0
ls -l "$ROOT/.whl"
