"""Every Triton kernel of a training step compiles for the H200's sm_90 with Triton's own compiler and ptxas, here
without a GPU: Triton's interpreter (test_triton_ops.py) runs programs the compiler rejects, such as a kernel
reading a global that is not a constexpr, and says nothing of registers. No kernel may spill more than 64 bytes
per thread (64 x 64 float32 tiles spill kilobytes)."""
import subprocess
import sys

import pytest

from .conftest import needs_triton
from .helpers import ROOT

pytestmark = [needs_triton, pytest.mark.slow]

KERNELS = ('pooled_forward_kernel', 'pooled_query_grad_kernel', 'pooled_key_grad_kernel', 'bias_rows_grad_kernel',
           'window_dot_kernel', 'window_sum_kernel')


def test_every_triton_kernel_compiles_for_sm90_without_spilling():
    # conftest's TRITON_INTERPRET=1 is inherited: the script restarts itself without it
    run = subprocess.run([
        sys.executable, 'tools/analysis/triton_compile_check.py', '--arch', '90', '--dtype', 'float32', 'bfloat16',
        '--max-spill', '64'
    ],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    table = run.stdout.splitlines()
    for kernel in KERNELS:  # the whole path was reached, in both types
        for dtype in ('float32', 'bfloat16'):
            assert any(line.startswith(kernel) and f' {dtype} ' in line for line in table), (kernel, dtype)
    assert any("'TAPS': 4" in line for line in table)  # the resized position bias's column taps too
