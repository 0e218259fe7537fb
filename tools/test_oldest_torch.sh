#!/usr/bin/env bash
# The oldest supported torch: builds the attention op against torch 2.1.2 in a second, minimal venv
# (requirements/env-torch2.1.txt: torch, mmengine, mmcv-lite) and runs the backbone and op tests there, through
# the ops' autograd.Function fallback (torch < 2.4 has no torch.library.custom_op / register_fake; the ops' schemas
# and kernels are the C++ library's there too, tests/test_op_library.py). CI runs it after README's
# test command. Extra arguments go to pytest; `--build-only` creates the venv and builds the op, and runs no tests (CI
# does that in the background while the main set-up runs, which leaves a core idle for about 45 s).
#
#   .venv-torch2.1/       the venv (kept; a second run reinstalls nothing)
#   .venv-torch2.1/src/   a copy of the repo's files, where the op is built in place (the repo's own
#                         mmtransnext/_ext*.so is built for .venv's torch and has the same file name); copied and
#                         built again whenever a file differs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-torch2.1"
REQUIREMENTS="$ROOT/requirements/env-torch2.1.txt"
log() { echo "[test_oldest_torch $(date +%T)] $*" >&2; }

STAMP="$VENV/.installed-$({
    cat "$REQUIREMENTS" "$ROOT/requirements/installer.txt" "$ROOT/tools/installer.sh"
    echo "${MMTRANSNEXT_INSTALLER:-uv}"
} | sha256sum | cut -c1-16)"
if [[ ! -f "$STAMP" ]]; then
    rm -rf "$VENV"
    PY_BOOT="${MMTRANSNEXT_PYTHON:-$(command -v python3.11 || command -v python3)}"
    log "creating $VENV with $PY_BOOT: $(grep -m1 '^torch==' "$REQUIREMENTS")"
    "$PY_BOOT" -m venv "$VENV"
    # shellcheck source=tools/installer.sh
    source "$ROOT/tools/installer.sh"
    installer_for "$VENV/bin/python"
    "${INSTALL[@]}" -r "$REQUIREMENTS"
    touch "$STAMP"
fi

SRC="$VENV/src"
FILES="$VENV/repo_files.tar"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf "$FILES")
BUILT="$SRC/.built-$(sha256sum "$FILES" | cut -c1-16)"  # the files' names, contents and times
if [[ ! -f "$BUILT" ]]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xf "$FILES" -C "$SRC"
    log "building the op against $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
    (cd "$SRC" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VENV/bin/python" setup.py -q build_ext --inplace > build.log 2>&1) \
        || { tail -n 60 "$SRC/build.log"; exit 1; }
    touch "$BUILT"
    log "op built"
fi
rm -f "$FILES"
[[ "${1:-}" == --build-only ]] && exit 0

# The skips this environment may have, each for its stated reason; any other skip fails the run.
cd "$SRC"
MMTRANSNEXT_SHARED="${MMTRANSNEXT_SHARED:-$ROOT/../shared}" \
MMTRANSNEXT_ALLOWED_SKIPS='needs a GPU|needs torch >= 2.4|needs the nvcc of torch|needs mmdet with|needs mmseg with|needs mmpretrain with' \
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider \
    tests/test_backbone_exactness.py tests/test_backbone_build.py tests/test_ops.py tests/test_pooled_attention.py \
    tests/test_memory_lean.py tests/test_converter.py tests/test_op_library.py "$@"
