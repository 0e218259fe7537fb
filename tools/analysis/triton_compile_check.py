"""Compile every Triton kernel of a TransNeXt training step for a GPU, on a machine without one.

Triton's interpreter (how the tests check the kernels' arithmetic on CPU tensors) accepts programs its compiler
rejects, and says nothing of registers or shared memory. This script runs a forward and backward pass of a
TransNeXt with ``attn_impl='triton'`` on CPU tensors; each kernel launch is compiled by Triton's real compiler and
ptxas (bundled with Triton) for the given CUDA architectures instead of being run, with the launch's own argument
types, alignments and constants. It prints a table (registers, spilled bytes, shared memory per program) and exits
non-zero when a kernel fails to compile or needs more shared memory than the architecture has.

    python tools/analysis/triton_compile_check.py [--arch 90 80] [--model tiny] [--dtype float32 bfloat16]
        [--max-spill BYTES]

The numbers are the compiler's, not timings: speed is measured on a GPU (``tools/gpu_check.sh``).
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

if os.environ.get('TRITON_INTERPRET') == '1':
    # the kernels must be defined as compiled ones, and with the GPU's tile sizes
    os.execve(sys.executable, [sys.executable] + sys.argv, {
        key: value
        for key, value in os.environ.items() if key != 'TRITON_INTERPRET'
    })

import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
# imported before TRITON_INTERPRET is set below: compiled kernels, the GPU's tile sizes
from mmtransnext.ops.triton_kernels import local_attention as local_kernels  # noqa: E402,F401
from mmtransnext.ops.triton_kernels import pooled_attention as pooled_kernels  # noqa: E402

# shared memory a program may use (opt-in maximum per block), bytes
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
CUOBJDUMP = osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')


class _CompileOnlyDriver:
    """What a kernel launch asks of the driver before compiling; the launch itself is skipped (see ``_compile``)."""

    def __init__(self, arch: int):
        self.target = GPUTarget('cuda', arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device('cpu')


def _resources(cubin: bytes) -> dict:
    """Registers and spilled (local / stack) bytes per thread, from cuobjdump's resource usage of the cubin."""
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([CUOBJDUMP, '-res-usage', f.name], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(':') for item in text.split('Resource usage:')[-1].split() if ':' in item)
    return dict(regs=int(fields['REG']), spill=int(fields['STACK']) + int(fields['LOCAL']))


def compile_step(arch: int, model: str, dtype: torch.dtype, sizes=((224, 224), (256, 320)), batch=2) -> list:
    """Compile each distinct kernel launch of training steps at ``sizes`` for ``sm_<arch>``: a list of result rows.
    The default sizes give both position-bias modes' column taps (the model's 224 grid, and resized from it)."""
    from mmtransnext.models import TransNeXt
    rows, seen = [], set()
    compile_only = _CompileOnlyDriver(arch)
    shared_limit = SHARED_LIMIT.get(arch, SHARED_LIMIT[80])

    def _compile(key, repr, fn, compile, is_manual_warmup, already_compiled):
        constants = {fn.jit_function.arg_names[path[0]]: value for path, value in compile['constants'].items()}
        pointers = sorted({t for t in compile['signature'].values() if t.startswith('*')})
        ident = (fn.name, str(compile['signature']), str(constants))
        if ident in seen:
            return True
        seen.add(ident)
        row = dict(kernel=fn.name,
                   arch=arch,
                   dtype=str(dtype).replace('torch.', ''),
                   pointers=' '.join(pointers),
                   constants=constants,
                   num_warps=compile['num_warps'])
        started = time.time()
        try:
            kernel = triton.compile(ASTSource(fn.jit_function, compile['signature'], compile['constants'],
                                              compile['configs'][0]),
                                    target=compile_only.target,
                                    options=dict(num_warps=compile['num_warps'],
                                                 num_stages=compile['num_stages'],
                                                 num_ctas=compile['num_ctas']))
            row.update(_resources(kernel.asm['cubin']), shared=kernel.metadata.shared, error=None)
            if row['shared'] > shared_limit:
                row['error'] = f"needs {row['shared']} bytes of shared memory, sm_{arch} has {shared_limit}"
        except Exception as error:  # the compiler's message is the finding
            row.update(regs=None, spill=None, shared=None, error=f'{type(error).__name__}: {error}')
        row['seconds'] = time.time() - started
        rows.append(row)
        return True  # handled: Triton skips the launch

    # products as on a CUDA device (on CPU tensors bfloat16 would be multiplied as float32, see ``_dot``)
    dot_precision = pooled_kernels.dot_precision
    pooled_kernels.dot_precision = lambda dtype, device: dot_precision(dtype, torch.device('cuda'))
    driver.set_active(compile_only)
    knobs.runtime.jit_cache_hook = _compile
    try:
        torch.manual_seed(0)
        net = TransNeXt(arch=model, attn_impl='triton')
        for size in sizes:
            x = torch.randn(batch, 3, *size)
            with torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
                outs = net(x)
            sum(o.float().sum() for o in outs).backward()  # the kernels' outputs are left unwritten: any values do
    finally:
        knobs.runtime.jit_cache_hook = None  # (the driver stays: without a GPU there is none to go back to)
        pooled_kernels.dot_precision = dot_precision
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', type=int, nargs='+', default=[90], help='CUDA compute capabilities x 10')
    parser.add_argument('--model', default='tiny', help="a TransNeXt arch ('micro', 'tiny', ...)")
    parser.add_argument('--dtype',
                        nargs='+',
                        default=['float32', 'bfloat16'],
                        choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--max-spill', type=int, help='fail where a kernel spills more bytes per thread than this')
    args = parser.parse_args(argv)
    # the Triton path takes CPU tensors only under the interpreter flag; the kernels above are already compiled
    # ones, so it only opens that gate
    os.environ['TRITON_INTERPRET'] = '1'
    rows = []
    for arch in args.arch:
        for dtype in args.dtype:
            rows += compile_step(arch, args.model, getattr(torch, dtype))
    print(f"{'kernel':26s} {'arch':>5s} {'autocast':>9s} {'pointers':22s} {'warps':>5s} {'regs':>5s} "
          f"{'spill B':>8s} {'smem KB':>8s} {'s':>5s}  constants")
    for r in rows:
        cells = ['-' if r[k] is None else r[k] for k in ('regs', 'spill')]
        smem = '-' if r['shared'] is None else f"{r['shared'] / 1024:.1f}"
        print(f"{r['kernel']:26s} {'sm_%d' % r['arch']:>5s} {r['dtype']:>9s} {r['pointers']:22s} {r['num_warps']:5d} "
              f"{cells[0]:>5} {cells[1]:>8} {smem:>8s} {r['seconds']:5.1f}  {r['constants']}")
    if args.max_spill is not None:
        for r in rows:
            if not r['error'] and r['spill'] > args.max_spill:
                r['error'] = f"spills {r['spill']} bytes per thread (--max-spill {args.max_spill})"
    failed = [r for r in rows if r['error']]
    for r in failed:
        print(f"\nFAILED {r['kernel']} sm_{r['arch']} {r['dtype']}: {r['error']}", file=sys.stderr)
    print(f'\n{len(rows)} kernel launches compiled, {len(failed)} failed; spill B: bytes per thread in local memory')
    return 1 if failed or not rows else 0


if __name__ == '__main__':
    sys.exit(main())
