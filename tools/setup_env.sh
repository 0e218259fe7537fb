#!/usr/bin/env bash
# One idempotent set-up step: creates .venv in the repo root with torch, mmcv, mmengine, mmdet,
# mmseg, mmpretrain, the test tools and mmtransnext itself (editable, extension built).
# Both of README's commands call it; a second run returns in seconds.
#
#   MMTRANSNEXT_PYTHON   interpreter that creates the venv (default: python3.11, else python3)
#   MMTRANSNEXT_WITH_OPS 0 skips building the attention op (the backbone then runs its PyTorch path)
#   FORCE_CUDA=1         build the op's CUDA kernels too (automatic when a GPU is visible);
#                        TORCH_CUDA_ARCH_LIST picks the architectures
#   MMTRANSNEXT_WHEELS   folder of prebuilt mmcv wheels (default: ../shared/wheels/torch2.14.1-cp311-linux_x86_64)
#   MMTRANSNEXT_INSTALLER uv (default) or pip: what installs the packages (tools/installer.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
WHEELS="${MMTRANSNEXT_WHEELS:-$ROOT/../shared/wheels/torch${TORCH_VERSION}-cp311-linux_x86_64}"

log() { echo "[setup_env] $*" >&2; }

# Everything that decides what gets installed or built goes into the stamp.
stamp_inputs() {
    echo "ops=${MMTRANSNEXT_WITH_OPS:-1} cuda=${FORCE_CUDA:-0} arch=${TORCH_CUDA_ARCH_LIST:-}"
    echo "installer=${MMTRANSNEXT_INSTALLER:-uv}"
    cat "$ROOT/tools/setup_env.sh" "$ROOT/tools/installer.sh" "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT"/requirements/*.txt
    if [[ -d "$ROOT/mmtransnext/ops/csrc" ]]; then
        find "$ROOT/mmtransnext/ops/csrc" -type f | sort | xargs -r cat
    fi
}
STAMP="$VENV/.mmtransnext-setup-$(stamp_inputs | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" ]]; then
    exit 0
fi

PY_BOOT="${MMTRANSNEXT_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PY_BOOT"
    "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)
# shellcheck source=tools/installer.sh
source "$ROOT/tools/installer.sh"
installer_for "$PY"

log "build tools"
"${INSTALL[@]}" 'setuptools>=77.0.3,<82' wheel ninja

log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
"${INSTALL[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

have_mmcv() {
    "$PY" - <<EOF 2>/dev/null
import mmcv, mmcv.ops  # noqa: F401  (mmcv.ops fails on an mmcv built for another torch)
assert mmcv.__version__ == "$MMCV_VERSION"
EOF
}

build_mmcv_from_source() {
    # mmcv 2.1.0 has no wheel for this torch. Its setup.py hard-codes -std=c++14/17 while
    # torch 2.14 headers need C++20, and it imports pkg_resources (hence no build isolation).
    local tmp
    tmp="$(mktemp -d)"
    log "building mmcv $MMCV_VERSION from source in $tmp (about 15 minutes on 2 cores)"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
        "mmcv==$MMCV_VERSION" -d "$tmp"
    tar -xzf "$tmp/mmcv-$MMCV_VERSION.tar.gz" -C "$tmp"
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$MMCV_VERSION/setup.py"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" --no-build-isolation "$tmp/mmcv-$MMCV_VERSION"
    rm -rf "$tmp"
}

if have_mmcv; then
    log "mmcv $MMCV_VERSION already installed"
else
    wheel_file=""
    py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
    torch_ok="$("$PY" -c "import torch; print(torch.__version__.split('+')[0] == '$TORCH_VERSION')")"
    if [[ -d "$WHEELS" && "$torch_ok" == True ]]; then
        wheel_file="$(ls "$WHEELS"/mmcv-"$MMCV_VERSION"-"$py_tag"-*-linux_"$(uname -m)".whl 2>/dev/null | head -n1 || true)"
    fi
    if [[ -n "$wheel_file" ]]; then
        log "mmcv from prebuilt wheel $wheel_file"
        "${INSTALL[@]}" "$wheel_file"
    fi
    if ! have_mmcv; then
        [[ -n "$wheel_file" ]] && log "prebuilt mmcv does not import here; building from source"
        build_mmcv_from_source
    fi
    have_mmcv || { log "mmcv $MMCV_VERSION failed to install"; exit 1; }
fi

log "mm* packages and test tools"
"${INSTALL[@]}" -r "$ROOT/requirements/env.txt"
# `mim search` (tests/test_model_zoo.py); without its dependency opendatalab, which needs setuptools~=60.2
"${INSTALL[@]}" --no-deps openmim==0.3.9

# The op is compiled once: into the wheel that pip builds from the sdist, as users of an index get it. The editable
# install takes its mmtransnext/_ext*.so from that wheel (what `build_ext --inplace` would have compiled again), and
# tests/test_packaging.py installs the wheel itself when its own sdist has the same contents.
DIST="$VENV/dist"
rm -rf "$DIST"
if [[ "${MMTRANSNEXT_WITH_OPS:-1}" != 0 ]]; then
    log "mmtransnext: sdist, and the wheel pip builds from it with the attention op mmtransnext._ext (C++; CUDA too with FORCE_CUDA=1 or a GPU)"
    "$PY" -m build --sdist --no-isolation --outdir "$DIST" "$ROOT" > "$VENV/sdist.log" 2>&1 \
        || { cat "$VENV/sdist.log"; exit 1; }
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation \
        --no-deps -w "$DIST" "$DIST"/mmtransnext-*.tar.gz
fi
log "mmtransnext (editable)"
MMTRANSNEXT_WITH_OPS=0 "${PIP[@]}" -q --no-build-isolation --no-deps -e "$ROOT"
rm -f "$ROOT"/mmtransnext/_ext*.so
if [[ "${MMTRANSNEXT_WITH_OPS:-1}" != 0 ]]; then
    "$PY" -m zipfile -e "$(ls "$DIST"/mmtransnext-*.whl)" "$DIST/unpacked"
    cp "$DIST"/unpacked/mmtransnext/_ext*.so "$ROOT/mmtransnext/"
    rm -rf "$DIST/unpacked"
fi

"$PY" -c 'import mmtransnext, mmdet, mmseg, mmpretrain' || { log "import check failed"; exit 1; }
if [[ "${MMTRANSNEXT_WITH_OPS:-1}" != 0 ]]; then
    "$PY" -c 'from mmtransnext.ops import ext_available; assert ext_available("cpu")' \
        || { log "mmtransnext._ext did not build; see the pip output above (MMTRANSNEXT_WITH_OPS=0 skips it)"; exit 1; }
fi
rm -f "$VENV"/.mmtransnext-setup-*
touch "$STAMP"
log "done: $VENV"
