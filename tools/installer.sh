# Sourced by tools/setup_env.sh and tools/test_oldest_torch.sh: `installer_for PYTHON` sets INSTALL to the command that
# installs packages into PYTHON's venv.
#
#   MMTRANSNEXT_INSTALLER  uv (default) or pip. uv (requirements/installer.txt, installed into the venv by pip) takes
#                          torch from its cache in about a second, where pip unpacks it for a minute; it reads its own
#                          settings (UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_FIND_LINKS, uv.toml), not pip's.
installer_for() {
    local py="$1" root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    case "${MMTRANSNEXT_INSTALLER:-uv}" in
        uv)
            "$py" -m pip install --disable-pip-version-check -q -r "$root/requirements/installer.txt"
            # --compile-bytecode: the .pyc files pip writes at install; without them each first import compiles
            INSTALL=("$(dirname "$py")/uv" pip install --python "$py" --quiet --compile-bytecode)
            ;;
        pip) INSTALL=("$py" -m pip install --disable-pip-version-check -q) ;;
        *)
            echo "MMTRANSNEXT_INSTALLER must be uv or pip, got '$MMTRANSNEXT_INSTALLER'" >&2
            return 1
            ;;
    esac
}
