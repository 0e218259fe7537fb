"""Compile every Triton kernel of a TransNeXt training step for the GPUs people train on, on a machine without one.

Triton's interpreter (how the tests check the kernels' arithmetic on CPU tensors) accepts programs its compiler
rejects, and says nothing of registers or shared memory. This script runs a forward and backward pass of a
TransNeXt with ``attn_impl='triton'`` on CPU tensors, once per autocast dtype, and records each distinct kernel
launch (its argument types, alignments and constants) instead of running it; then it compiles every launch with
Triton's real compiler and ptxas (bundled with Triton) for each CUDA architecture asked for. It prints a table
(registers, spilled bytes, shared memory per program against the architecture's limit) and a summary per
architecture.

    python tools/analysis/triton_compile_check.py [--arch 75 80 86 89 90 100 120] [--model tiny]
        [--dtype float32 bfloat16] [--max-spill BYTES]

``--arch`` defaults to every architecture of ``GPUS`` (their per-block shared-memory limits: ``SHARED_LIMIT``).
``ARCH:DTYPE[,DTYPE]`` (e.g. ``86:float32``) compiles that architecture's launches of those autocast dtypes only,
``ARCH:DTYPE[,DTYPE]:KERNEL[,KERNEL]`` (e.g. ``100:bfloat16:pooled_``) only the kernels whose names start so: the
cheaper, partial check of tests/test_triton_compile.py. Before compiling, each architecture is probed with a small
``tl.dot`` kernel in a child process: one that this Triton or its ptxas cannot compile for is reported as not
checked, with which of the two refused and its message (Triton 3.8: ``--arch 101`` is refused by its ptxas 13.3,
``--arch 130`` by Triton itself).

Exit status: 1 when a kernel fails to compile, needs more shared memory than the architecture lets a block opt in
to, or spills more than ``--max-spill``; else 2 when an architecture could not be checked; else 0. The launchers
choose their tiles without looking at the GPU (``TILES`` in ``mmtransnext/ops/triton_kernels``), so one training
step per dtype gives the launches of every architecture. The numbers are the compiler's, not timings: speed is
measured on a GPU (``tools/gpu_check.sh``).
"""
import argparse
import contextlib
import io
import json
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

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.errors import PTXASError  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# The GPUs each architecture (compute capability x 10) stands for, and the shared memory one block may opt in to,
# bytes (the shared memory per SM less the 1 KB the driver reserves per block from sm_80 on). From the CUDA
# programming guide's technical specifications per compute capability
# (https://docs.nvidia.com/cuda/cuda-programming-guide/05-appendices/compute-capabilities.html), as NVIDIA's CCCL
# encodes them (libcudacxx/include/cuda/__device/arch_traits.h: max_shared_memory_per_block_optin, e.g. sm_100
# 228 - 1 KB, sm_120 100 - 1 KB). Triton opts in to whatever a kernel needs up to that limit.
GPUS = {
    75: 'T4, RTX 20xx',
    80: 'A100',
    86: 'A10, RTX 30xx',
    89: 'L4, RTX 40xx',
    90: 'H100, H200',
    100: 'B200',
    120: 'RTX 50xx',
}
SHARED_LIMIT = {
    75: 64 * 1024,
    80: 163 * 1024,
    86: 99 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,
    100: 227 * 1024,
    120: 99 * 1024
}
DTYPES = ('float32', 'bfloat16', 'float16')
CUOBJDUMP = osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')
RECORDED_ON = 90  # the target the training step runs against: any, as the launches do not depend on it


class _CompileOnlyDriver:
    """What a kernel launch asks of the driver before compiling; the launch itself is skipped (see ``_record``)."""

    def __init__(self, arch: int):
        self.target = GPUTarget('cuda', arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch
        return torch.device('cpu')


@triton.jit
def _probe_kernel(X, Y, N: tl.constexpr):
    """A bfloat16 product: enough for Triton to pick the architecture's matrix instructions, and for ptxas."""
    rows = tl.arange(0, N)
    tile = tl.load(X + rows[:, None] * N + rows[None, :])
    tl.store(Y + rows[:, None] * N + rows[None, :], tl.dot(tile, tile))


def _compile(fn, signature, constants, attrs, target: GPUTarget, options: dict):
    """``triton.compile`` of one specialization; Triton prints the whole PTX to stdout when ptxas fails, kept out
    of the table (the error keeps ptxas's own message)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return triton.compile(ASTSource(fn, signature, constants, attrs), target=target, options=options)


def _why_unsupported(arch: int, error: Exception, stderr: str = '') -> str:
    """Which of Triton and ptxas refused ``sm_<arch>``, in its own words."""
    if isinstance(error, PTXASError):
        ptxas = get_ptxas(arch)
        said = [line.strip() for line in str(error).splitlines() if 'ptxas' in line and 'fatal' in line]
        return f"ptxas {ptxas.version} ({osp.basename(ptxas.path)}) refuses it: {' / '.join(said) or error}"
    # the compiler's C++ assertions write to the process's stderr, not into the exception
    said = [line[line.index('Assertion'):] for line in stderr.splitlines() if 'Assertion' in line]
    return f"Triton {triton.__version__} refuses it: {' / '.join(said + [str(error).splitlines()[0]])}"


def _probe_here(archs) -> None:
    """The child process of ``probe``: one JSON line per architecture on stdout, a marker on stderr before each."""
    for arch in archs:
        print(f'@probe {arch}', file=sys.stderr, flush=True)
        try:
            _compile(_probe_kernel, {
                'X': '*bf16',
                'Y': '*fp32',
                'N': 'constexpr'
            }, {(2, ): 16}, {}, GPUTarget('cuda', arch, 32), {})
            print(json.dumps(dict(arch=arch, error=None)), flush=True)
        except Exception as error:  # what refused the architecture is the finding
            result = dict(arch=arch,
                          error=type(error).__name__,
                          ptxas=isinstance(error, PTXASError),
                          message=str(error))
            print(json.dumps(result), flush=True)


def probe(archs) -> dict:
    """``{arch: None}`` where Triton and ptxas compile for it, else ``{arch: why not}``. In a child process, so
    that a compiler that aborts on an architecture it does not know reports instead of ending this one."""
    reasons, left = {}, list(archs)
    while left:
        run = subprocess.run([sys.executable, osp.abspath(__file__), '--probe', *map(str, left)],
                             capture_output=True,
                             text=True)
        stderr_of = {}
        for part in run.stderr.split('@probe ')[1:]:
            arch, _, text = part.partition('\n')
            stderr_of[int(arch)] = text
        for line in run.stdout.splitlines():
            if not line.startswith('{'):
                continue
            result = json.loads(line)
            arch = result['arch']
            if result['error'] is None:
                reasons[arch] = None
                continue
            error = PTXASError(result['message']) if result['ptxas'] else RuntimeError(result['message'])
            reasons[arch] = _why_unsupported(arch, error, stderr_of.get(arch, ''))
        left = [arch for arch in left if arch not in reasons]
        if left:  # the child died on left[0]
            tail = stderr_of.get(left[0], run.stderr).strip().splitlines()[-3:]
            reasons[left[0]] = (f'Triton {triton.__version__} ended the process (exit status {run.returncode}) '
                                f"compiling for it: {' / '.join(tail)}")
            left = left[1:]
    for arch in archs:
        if reasons[arch] is None and arch not in SHARED_LIMIT:
            reasons[arch] = 'its per-block shared-memory limit is not in SHARED_LIMIT (add it to check sm_%d)' % arch
    return reasons


def _resources(cubin: bytes) -> dict:
    """Registers and spilled (local / stack) bytes per thread, from cuobjdump's resource usage of the cubin."""
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([CUOBJDUMP, '-res-usage', f.name], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(':') for item in text.split('Resource usage:')[-1].split() if ':' in item)
    return dict(regs=int(fields['REG']), spill=int(fields['STACK']) + int(fields['LOCAL']))


def record_launches(model: str, dtypes, sizes=((224, 224), (256, 320)), batch=2) -> list:
    """The distinct kernel launches of training steps at ``sizes`` under each autocast dtype: dicts of what
    ``triton.compile`` needs and the dtypes each launch was seen under (the bias-table gradient's launches are the
    same in every dtype). The default sizes give both position-bias modes' column taps (the model's 224 grid, and
    resized from it)."""
    import torch

    from mmtransnext.models import TransNeXt
    from mmtransnext.ops.triton_kernels import pooled_attention as pooled_kernels
    launches = {}
    dtype_name = None

    def _record(key, repr, fn, compile, is_manual_warmup, already_compiled):
        constants = {fn.jit_function.arg_names[path[0]]: value for path, value in compile['constants'].items()}
        ident = (fn.name, str(compile['signature']), str(constants))
        pointers = sorted({kind for kind in compile['signature'].values() if kind.startswith('*')})
        if ident not in launches:
            launches[ident] = dict(kernel=fn.name,
                                   fn=fn.jit_function,
                                   signature=compile['signature'],
                                   constants=compile['constants'],
                                   attrs=compile['configs'][0],
                                   named_constants=constants,
                                   pointers=' '.join(pointers),
                                   options=dict(num_warps=compile['num_warps'],
                                                num_stages=compile['num_stages'],
                                                num_ctas=compile['num_ctas']),
                                   dtypes=[])
        if dtype_name not in launches[ident]['dtypes']:
            launches[ident]['dtypes'].append(dtype_name)
        return True  # handled: Triton skips the launch

    # products as on a CUDA device (on CPU tensors bfloat16 would be multiplied as float32, see ``_dot``)
    dot_precision = pooled_kernels.dot_precision
    pooled_kernels.dot_precision = lambda dtype, device: dot_precision(dtype, torch.device('cuda'))
    driver.set_active(_CompileOnlyDriver(RECORDED_ON))
    knobs.runtime.jit_cache_hook = _record
    try:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
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
    return list(launches.values())


def compile_launch(launch: dict, arch: int) -> dict:
    """Compile one recorded launch for ``sm_<arch>``: a result row (an error where it fails or does not fit)."""
    row = dict(kernel=launch['kernel'],
               arch=arch,
               dtypes='+'.join(launch['dtypes']),
               pointers=launch['pointers'],
               constants=launch['named_constants'],
               num_warps=launch['options']['num_warps'])
    started = time.time()
    try:
        kernel = _compile(launch['fn'], launch['signature'], launch['constants'], launch['attrs'],
                          GPUTarget('cuda', arch, 32), launch['options'])
        row.update(_resources(kernel.asm['cubin']), shared=kernel.metadata.shared, error=None)
        if row['shared'] > SHARED_LIMIT[arch]:
            row['error'] = (f"needs {row['shared']} bytes of shared memory, a block of sm_{arch} may have "
                            f'{SHARED_LIMIT[arch]}')
    except Exception as error:  # the compiler's message is the finding
        message = '\n'.join(line for line in str(error).splitlines() if not line.startswith('Repro command'))
        row.update(regs=None, spill=None, shared=None, error=f'{type(error).__name__}: {message}')
    row['seconds'] = time.time() - started
    return row


def _arch_spec(text: str):
    """``ARCH[:DTYPE,...[:KERNEL,...]]`` -> (arch, autocast dtypes or None, kernel-name prefixes or None)."""
    arch, dtypes, kernels = (text.split(':') + ['', ''])[:3]
    dtypes = dtypes.split(',') if dtypes else None
    for dtype in dtypes or ():
        if dtype not in DTYPES:
            raise argparse.ArgumentTypeError(f'{dtype!r} is none of {DTYPES}')
    return int(arch), dtypes, tuple(kernels.split(',')) if kernels else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch',
                        type=_arch_spec,
                        nargs='+',
                        default=[(arch, None, None) for arch in GPUS],
                        help='CUDA compute capabilities x 10 (default: %s), each as ARCH, or ARCH:DTYPE[,...] for '
                        "those autocast dtypes' launches only, or ARCH:DTYPE[,...]:KERNEL[,...] for the kernels "
                        'whose names start so' % ' '.join(map(str, GPUS)))
    parser.add_argument('--model', default='tiny', help="a TransNeXt arch ('micro', 'tiny', ...)")
    parser.add_argument('--dtype', nargs='+', default=['float32', 'bfloat16'], choices=DTYPES)
    parser.add_argument('--max-spill', type=int, help='fail where a kernel spills more bytes per thread than this')
    parser.add_argument('--probe', type=int, nargs='+', help=argparse.SUPPRESS)  # ``probe``'s child process
    args = parser.parse_args(argv)
    if args.probe:
        _probe_here(args.probe)
        return 0
    wanted = {arch: dtypes or args.dtype for arch, dtypes, _ in args.arch}
    kernels = {arch: prefixes for arch, _, prefixes in args.arch}

    started = time.time()
    # before TRITON_INTERPRET is set below: the kernels are defined as compiled ones, with the GPU's tile sizes
    import mmtransnext.ops.triton_kernels.local_attention  # noqa: F401
    import mmtransnext.ops.triton_kernels.pooled_attention  # noqa: F401
    unsupported = {arch: why for arch, why in probe(list(wanted)).items() if why}
    archs = [arch for arch in wanted if arch not in unsupported]
    probed = time.time()
    # the Triton path takes CPU tensors only under the interpreter flag; the kernels above are already compiled
    # ones, so it only opens that gate
    os.environ['TRITON_INTERPRET'] = '1'
    dtypes = [dtype for dtype in DTYPES if any(dtype in wanted[arch] for arch in archs)]
    launches = record_launches(args.model, dtypes) if archs else []
    recorded = time.time()
    rows = [
        compile_launch(launch, arch) for arch in archs for launch in launches
        if set(launch['dtypes']) & set(wanted[arch]) and launch['kernel'].startswith(kernels[arch] or '')
    ]

    print(f"{'kernel':26s} {'arch':>6s} {'autocast':>16s} {'pointers':22s} {'warps':>5s} {'regs':>5s} "
          f"{'spill B':>8s} {'smem KB':>8s} {'s':>5s}  constants")
    for r in rows:
        cells = ['-' if r[k] is None else r[k] for k in ('regs', 'spill')]
        smem = '-' if r['shared'] is None else f"{r['shared'] / 1024:.1f}"
        print(f"{r['kernel']:26s} {'sm_%d' % r['arch']:>6s} {r['dtypes']:>16s} {r['pointers']:22s} "
              f"{r['num_warps']:5d} {cells[0]:>5} {cells[1]:>8} {smem:>8s} {r['seconds']:5.1f}  {r['constants']}")
    if args.max_spill is not None:
        for r in rows:
            if not r['error'] and r['spill'] > args.max_spill:
                r['error'] = f"spills {r['spill']} bytes per thread (--max-spill {args.max_spill})"
    failed = [r for r in rows if r['error']]
    for r in failed:
        print(f"\nFAILED {r['kernel']} sm_{r['arch']} {r['dtypes']}: {r['error']}", file=sys.stderr)

    print()
    for arch in wanted:
        if arch in unsupported:
            print(f'sm_{arch}: not checked: {unsupported[arch]}')
            continue
        mine = [r for r in rows if r['arch'] == arch]
        compiled = [r for r in mine if r['shared'] is not None]
        which = ', '.join(wanted[arch]) + (f"; {', '.join(p + '*' for p in kernels[arch])}" if kernels[arch] else '')
        print(f"sm_{arch} ({GPUS.get(arch, '?')}; {which}): {len(mine)} launches, "
              f"{len(mine) - len(compiled)} not compiled, shared memory up to "
              f"{max((r['shared'] for r in compiled), default=0) / 1024:.1f} of {SHARED_LIMIT[arch] / 1024:.0f} KB, "
              f"spills up to {max((r['spill'] for r in compiled), default=0)} B per thread, "
              f"{sum(r['seconds'] for r in mine):.0f} s")
    print(f'\n{len(rows)} kernel launches compiled ({len(launches)} distinct ones recorded), {len(failed)} failed, '
          f'{len(unsupported)} architectures not checked; spill B: bytes per thread in local memory. Seconds: '
          f'{probed - started:.0f} probing, {recorded - probed:.0f} in training steps, {time.time() - recorded:.0f} '
          'compiling')
    if failed:
        return 1
    if unsupported:
        return 2
    return 0 if rows else 1


if __name__ == '__main__':
    sys.exit(main())
