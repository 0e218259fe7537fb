#!/usr/bin/env bash
# The lint / format gate: the checks of .pre-commit-config.yaml, from the pip-installed tools in .venv (pre-commit
# itself fetches its hooks from git hosts, which CI cannot reach). Settings: setup.cfg ([flake8], [isort],
# [yapf]) and .clang-format. Exits non-zero, naming the files, when anything is off.
#
#   bash tools/lint.sh            check the whole tree
#   bash tools/lint.sh --fix      rewrite it (isort, yapf, clang-format), then check
#   bash tools/lint.sh PATH...    check only these files or folders (tests/test_lint.py uses it)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${MMTRANSNEXT_LINT_PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
fix=0
if [[ "${1:-}" == --fix ]]; then fix=1; shift; fi
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=(mmtransnext tools tests configs setup.py); fi

python_files=() cxx_files=()
while IFS= read -r -d '' f; do
    case "$f" in
        *.py) python_files+=("$f") ;;
        *.h | *.cuh | *.cpp | *.cu) cxx_files+=("$f") ;;
    esac
done < <(find "${targets[@]}" -type f \( -name '*.py' -o -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu' \) \
         -not -path '*/.venv*' -not -path '*/build/*' -print0 | sort -z)
clang_format="$(dirname "$PY")/clang-format"

if [[ $fix == 1 ]]; then
    if [[ ${#python_files[@]} -gt 0 ]]; then
        "$PY" -m isort -q --settings-path setup.cfg "${python_files[@]}"
        "$PY" -m yapf -i --style setup.cfg "${python_files[@]}"
    fi
    [[ ${#cxx_files[@]} -gt 0 ]] && "$clang_format" -i --style=file:.clang-format "${cxx_files[@]}"
fi

status=0
fail() { echo "lint: $1" >&2; status=1; }
if [[ ${#python_files[@]} -gt 0 ]]; then
    "$PY" -m flake8 --config setup.cfg "${python_files[@]}" || fail 'flake8 found the problems above'
    "$PY" -m isort --check-only --diff -q --settings-path setup.cfg "${python_files[@]}" \
        || fail 'isort would reorder the imports above (bash tools/lint.sh --fix)'
    "$PY" -m yapf --diff --style setup.cfg "${python_files[@]}" \
        || fail 'yapf would reformat the lines above (bash tools/lint.sh --fix)'

fi
if [[ ${#cxx_files[@]} -gt 0 ]]; then
    "$clang_format" --dry-run -Werror --style=file:.clang-format "${cxx_files[@]}" \
        || fail 'clang-format would reformat the C++ / CUDA lines above (bash tools/lint.sh --fix)'
fi
if [[ $status == 0 ]]; then echo "lint: ${#python_files[@]} Python and ${#cxx_files[@]} C++ / CUDA files clean"; fi
exit $status
