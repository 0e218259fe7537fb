"""tools/deployment/export_aoti.py: a backbone compiled by AOTInductor runs in a process with torch and the op library
only (tools/deployment/load_aoti.py), and says what to load when the library is missing."""
import re
import subprocess
import sys

import pytest
import torch

from .conftest import needs_ext
from .helpers import ROOT, run_tool

pytestmark = [
    pytest.mark.slow,  # each export traces and compiles a backbone: about 35 s on 2 cores
    needs_ext,
    pytest.mark.skipif(not hasattr(torch._inductor, 'aoti_compile_and_package'),
                       reason=f'needs torch >= 2.6 (AOTInductor packages): torch {torch.__version__}'),
]

TOY = ROOT / 'configs/toy/transnext_toy_cls.py'
EXPORT = 'tools/deployment/export_aoti.py'
CHECK = re.compile(r'^\S+: (\d+) x 3 x (\d+) x (\d+), AOTInductor vs PyTorch: max abs difference / output scale = '
                   r'(\S+) ok$')

# Inductor's scalar C++ instead of its vectorised C++ (the default): the tool took 133 s instead of 262 s on 2 cores,
# most of the difference sympy simplifying index expressions for vector strides. What this test checks is the same
# either way (the export, the calls into the op library, the size range, the loaders); inductor's vectorised code at
# symbolic sizes is checked in test_pytorch2.py::test_inductor_trains_a_stage_in_one_graph_for_dynamic_sizes, and the
# tool compares every package it writes with eager PyTorch (and fails above its tolerance).
SCALAR_CPP = {'TORCHINDUCTOR_VEC_ISA_OK': '0'}

# what a deployment without mmtransnext sees: the package located, mmtransnext not installed (not found)
WITHOUT_MMTRANSNEXT = f'''
import sys
sys.modules['mmtransnext'] = None
sys.path.insert(0, {str(ROOT / 'tools/deployment')!r})
from load_aoti import load_package
try:
    load_package(sys.argv[1])
except RuntimeError as error:
    print(error)
'''


def checked(stdout):
    """{(batch, H, W): relative difference} of the inputs the tool ran through the package."""
    return {tuple(map(int, m.groups()[:3])): float(m[4]) for m in map(CHECK.match, stdout.splitlines()) if m}


def test_package_for_a_range_of_sizes_runs_with_torch_and_the_op_library(tmp_path):
    """One package for 61-128 px and any batch: exact at the export size and at others (the tool checks 104 x 104 at
    batch 1), in another process with torch and the library only (72 x 96, batch 3), refused outside its range."""
    result = run_tool(EXPORT,
                      TOY,
                      '--out',
                      'toy.pt2',
                      '--shape',
                      '64',
                      '64',
                      '--max-size',
                      '128',
                      cwd=tmp_path,
                      env=SCALAR_CPP)
    differences = checked(result.stdout)
    assert list(differences) == [(2, 64, 64), (1, 104, 104)], result.stdout
    assert max(differences.values()) <= 1e-5, result.stdout  # measured: 1.1e-6 (0.28 with inductor's own pooling)
    assert 'mmtransnext::local_similarity' in result.stdout and 'torch.ops.load_library(' in result.stdout
    run = run_tool('tools/deployment/load_aoti.py', 'toy.pt2', '--shape', '3', '3', '72', '96', cwd=tmp_path)
    assert 'input 3x3x72x96 -> 3x256x3x3' in run.stdout and 'mmtransnext not imported' in run.stdout
    outside = run_tool('tools/deployment/load_aoti.py',
                       'toy.pt2',
                       '--shape',
                       '1',
                       '3',
                       '64',
                       '136',
                       cwd=tmp_path,
                       check=False)
    assert 'input width 136 is outside what the package was compiled for (heights 61 to 128, widths 61 to 128' \
        in outside.stderr, outside.stderr
    missing = subprocess.run([sys.executable, '-c', WITHOUT_MMTRANSNEXT, 'toy.pt2'],
                             cwd=tmp_path,
                             capture_output=True,
                             text=True,
                             timeout=120)
    assert re.search(r'toy.pt2 calls mmtransnext::\w+, an op of mmtransnext\'s library, and no library was loaded',
                     missing.stdout), missing.stdout + missing.stderr[-2000:]
    assert 'torch.ops.load_library(' in missing.stdout
