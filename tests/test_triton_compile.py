"""Every Triton kernel of a training step compiles, with Triton's own compiler and ptxas and without a GPU, for the
GPUs people train on, and each launch's shared memory fits what a block of that GPU may opt in to: Triton's
interpreter (test_triton_ops.py) runs programs the compiler rejects, such as a kernel reading a global that is not
a constexpr, and says nothing of registers or shared memory. No kernel may spill more than 64 bytes per thread
(64 x 64 float32 tiles spill kilobytes).

What is compiled where (tools/analysis/triton_compile_check.py's default, every launch for every architecture, took
206 s on 2 cores with an empty Triton cache; this selection 78 to 84 s, sm_90 alone 33 s): every launch in float32
and bfloat16 for the H200's sm_90; for each other architecture the pooled-attention kernels, the only ones with
tl.dot (FMA in float32 everywhere; in bfloat16 FMA on sm_75, mma.sync on sm_80 / 86 / 89 / 120, wgmma on sm_90,
tcgen05 on sm_100) and with more than 2 KB of shared memory, in one autocast dtype (OTHER_ARCHS). The window and
bias-table kernels compile to the same Triton GPU program on sm_75 to sm_90."""
import re
import subprocess
import sys

import pytest

from .conftest import needs_triton
from .helpers import ROOT

pytestmark = [needs_triton, pytest.mark.slow]

KERNELS = ('pooled_forward_kernel', 'pooled_query_grad_kernel', 'pooled_key_grad_kernel', 'bias_rows_grad_kernel',
           'window_dot_kernel', 'window_sum_kernel')
# architecture -> the autocast dtype of its pooled launches (measured with Triton 3.8):
# sm_75: float32 needs the most shared memory (36 of 64 KB, the tightest limit; FMA in both dtypes);
# sm_86 / sm_89: the two compile to the same PTX, so float32 on one (48 of 99 KB) and bfloat16 on the other cover
#   both dtypes of both;
# sm_80: bfloat16 (mma.sync); its float32 program is sm_86's and sm_90's (the same Triton GPU program);
# sm_100: bfloat16, whose tcgen05 tiles take 116 of 227 KB; sm_120: float32, 48 of 99 KB.
OTHER_ARCHS = {75: 'float32', 80: 'bfloat16', 86: 'float32', 89: 'bfloat16', 100: 'bfloat16', 120: 'float32'}


def test_every_triton_kernel_compiles_and_fits_each_gpu_without_spilling():
    # conftest's TRITON_INTERPRET=1 is inherited: the script restarts itself without it
    others = [f'{arch}:{dtype}:pooled_' for arch, dtype in OTHER_ARCHS.items()]
    run = subprocess.run([
        sys.executable, 'tools/analysis/triton_compile_check.py', '--arch', '90', *others, '--dtype', 'float32',
        'bfloat16', '--max-spill', '64'
    ],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    table = [line.split() for line in run.stdout.splitlines() if line.split()[:1] and line.split()[0] in KERNELS]
    for kernel in KERNELS:  # the whole path was reached on sm_90, in both types
        for dtype in ('float32', 'bfloat16'):
            assert any(row[:2] == [kernel, 'sm_90'] and dtype in row[2].split('+') for row in table), (kernel, dtype)
    assert any("'TAPS': 4" in line for line in run.stdout.splitlines())  # the resized position bias's taps too
    for arch, dtype in OTHER_ARCHS.items():  # the 8 pooled launches of the dtype: 2 tap counts x (2 forward, 2 grad)
        summary = re.search(rf'^sm_{arch} \(.*; {dtype}; pooled_\*\): (\d+) launches, 0 not compiled', run.stdout,
                            re.MULTILINE)
        assert summary and int(summary.group(1)) == 8, (arch, run.stdout[-3000:])


def test_an_architecture_triton_or_ptxas_cannot_compile_for_is_named_with_the_reason():
    run = subprocess.run([sys.executable, 'tools/analysis/triton_compile_check.py', '--arch', '101', '130', '87'],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert run.returncode == 2, run.stdout[-4000:] + run.stderr[-4000:]  # not checked, rather than failed
    # Triton 3.8 asks its ptxas 13.x for sm_101a, which that ptxas no longer knows; sm_130 stops Triton itself
    assert re.search(r"^sm_101: not checked: ptxas 13\.\d+ \(ptxas-blackwell\) refuses it: .*'sm_101a' is not defined",
                     run.stdout, re.MULTILINE), run.stdout
    assert re.search(r'^sm_130: not checked: Triton 3\..* refuses it: .*computeCapability not supported', run.stdout,
                     re.MULTILINE), run.stdout
    assert 'sm_87: not checked: its per-block shared-memory limit is not in SHARED_LIMIT' in run.stdout
