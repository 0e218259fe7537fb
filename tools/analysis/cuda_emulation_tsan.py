"""The CUDA kernels under ThreadSanitizer: the CPU emulation of their execution (tests/cuda_emulation/) built with
-fsanitize=thread and run on the CUDA-only shapes of tests/test_cuda_emulation.py. A missing __syncthreads() is a
race between the emulated threads of a block, which TSan reports even where the results happen to come out right.

    python tools/analysis/cuda_emulation_tsan.py

Prints TSan's reports, if any, and exits non-zero on any. The module is built first (without TSan in the
compiler's process), then the script restarts itself with GCC's TSan runtime preloaded. Under a minute on 2 cores.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def build():
    from tests.test_cuda_emulation import build_emulated_extension
    return build_emulated_extension(sanitizer='thread')


def run_kernels(module):
    """Every kernel, forward and backward, on shapes with several blocks, key tiles and query chunks."""
    import torch

    from mmtransnext.ops import ext_loader
    from tests import test_cuda_emulation as emulation
    from tests.test_ops import _compare
    with ext_loader.replaced(module):
        _compare((2, 2, 5, 7, 16, 3), torch.float32, 'cpu', atol=1e-5)
        for shape in emulation.POOLED_CUDA_SHAPES + [emulation.POOLED_SHAPES[2], emulation.POOLED_SHAPES[4]]:
            inputs = emulation.pooled_inputs(*shape, dtype=torch.float32)
            emulation._pooled_step(inputs, shape, 'ext')


def main():
    if os.environ.get('MMTRANSNEXT_TSAN_RUN') != '1':
        try:  # the compiler must not run with the TSan runtime preloaded
            build()
        except ImportError:  # built; a TSan module loads only where the runtime is preloaded (below)
            pass
        runtime = subprocess.run(['gcc', '-print-file-name=libtsan.so'], capture_output=True, text=True).stdout.strip()
        env = dict(os.environ,
                   MMTRANSNEXT_TSAN_RUN='1',
                   LD_PRELOAD=runtime,
                   TSAN_OPTIONS='halt_on_error=0 report_signal_unsafe=0 exitcode=66')
        sys.exit(subprocess.run([sys.executable, __file__], env=env).returncode)
    run_kernels(build())
    print('every kernel ran under ThreadSanitizer (its reports, if any, are above; exit status 66 with any)')


if __name__ == '__main__':
    main()
