"""The distributions users install from an index: `python -m build`'s sdist, the wheel pip builds from it, that
wheel installed on its own and used (a forward through the compiled op, `mim search`)."""
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .conftest import WORKER_CORES
from .helpers import ROOT
from .test_model_zoo import PAPER_CONFIGS


def _run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1200, **kwargs)
    assert result.returncode == 0, f'{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}'
    return result


def _contents(sdist):
    """{member name: sha256 of its bytes} of a source distribution (not the archive's own bytes: times differ)."""
    with tarfile.open(sdist) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers() if m.isfile()}


def _wheel_built_from(sdist, out_dir):
    """The wheel pip builds from ``sdist``. tools/setup_env.sh has built one from its own sdist (the op's single
    compile of a CI run, in .venv/dist); where that sdist has the same contents, its wheel is this one."""
    built = Path(sys.prefix) / 'dist'
    for earlier in built.glob('mmtransnext-*.tar.gz'):
        wheels = list(built.glob('mmtransnext-*.whl'))
        if len(wheels) == 1 and _contents(earlier) == _contents(sdist):
            return wheels[0]
    _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-build-isolation', '--no-deps', '-w', out_dir, sdist],
         env=dict(os.environ, MAX_JOBS=str(WORKER_CORES)),
         cwd=out_dir.parent)
    (wheel, ) = out_dir.glob('mmtransnext-*.whl')
    return wheel


@pytest.mark.slow
def test_the_sdist_builds_a_wheel_that_installs_and_runs(tmp_path):
    # the sdist, as `python -m build` writes it for an index
    _run([sys.executable, '-m', 'build', '--sdist', '--no-isolation', '--outdir', tmp_path / 'dist', ROOT])
    (sdist, ) = (tmp_path / 'dist').glob('mmtransnext-*.tar.gz')
    inside = {name.split('/', 1)[1] for name in tarfile.open(sdist).getnames() if '/' in name}
    for needed in ('requirements/runtime.txt', 'requirements/det.txt', 'mmtransnext/ops/csrc/common/cpu_math.h',
                   'mmtransnext/ops/csrc/common/cuda/pooled_attention_cuda_kernel.cuh',
                   'mmtransnext/ops/csrc/pytorch/cuda/pooled_attention_cuda.cu', 'mmtransnext/.mim/model-index.yml',
                   'mmtransnext/.mim/configs/metafiles/maskrcnn.yml', 'LICENSE', 'CITATION.cff'):
        assert needed in inside, needed

    # the wheel pip builds from it (`pip install mmtransnext-X.tar.gz` does the same): the op compiled in
    wheel = _wheel_built_from(sdist, tmp_path / 'wheels')
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith('mmtransnext/_ext') and n.endswith('.so') for n in names)
    assert {'mmtransnext/.mim/model-index.yml', 'mmtransnext/.mim/configs/maskrcnn_transnext_tiny.py'} <= set(names)

    # installed into a folder of its own, used from elsewhere with nothing of the repository on the path
    site = tmp_path / 'site'
    _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-compile', '--target', site, wheel])
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS='250')
    code = ('import torch, mmtransnext\n'
            f'assert mmtransnext.__file__.startswith({str(site)!r}), mmtransnext.__file__\n'
            'from mmtransnext.models import TransNeXt\n'
            'from mmtransnext.ops import ext_available\n'
            'assert ext_available("cpu")\n'
            'model = TransNeXt(arch="micro", img_size=64, attn_impl="ext").eval()\n'
            'with torch.no_grad():\n'
            '    print(tuple(model(torch.randn(1, 3, 64, 64))[-1].shape))\n')
    assert _run([sys.executable, '-c', code], cwd=tmp_path, env=env).stdout.strip() == '(1, 384, 2, 2)'

    result = _run([sys.executable, '-m', 'mim', 'search', 'mmtransnext'], cwd=tmp_path, env=env)
    listed = {}
    for block in result.stdout.split('config id: ')[1:]:
        name, *lines = block.splitlines()
        listed[name.strip()] = dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith('-'))
    assert sorted(listed) == PAPER_CONFIGS
    for name, fields in listed.items():  # dataset / metric (e.g. coco/box_ap), parameters, FLOPs
        assert float(fields['parameters']) > 1e6 and float(fields['flops']) > 1e9, name
        assert any('/' in key and float(value) > 0 for key, value in fields.items() if key != 'config'), name
