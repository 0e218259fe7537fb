"""The one place that decides which backend runs each op, and says why.

Backends:

* ``'pytorch'``: the reference arithmetic (the authors'), always available; every other backend is held to it.
* ``'ext'``: the compiled mmcv-style op ``mmtransnext._ext`` (CPU kernels always, CUDA kernels when built so).
* ``'triton'``: Triton kernels (``mmtransnext.ops.triton_kernels``). On a GPU they are compiled; on CPU tensors they
  run only under Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI checks their arithmetic.

``attn_impl`` names one of them or ``'auto'``. Each op states what it can run on (:data:`OP_SUPPORT`). Under
``'auto'`` the attention ops (:data:`MEASURED_OPS`) are measured and verified on the device in use the first time
they run (:mod:`.autotune`); where nothing is measured (tracing, meta tensors, ``MMTRANSNEXT_AUTOTUNE=0``) and for the
other ops, ``'auto'`` takes the first backend of the static table (:data:`AUTO_ORDER`) that can run, and records
why the ones before it could not. Layers ask :func:`choose_backend`; they never decide.
"""
import logging
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Dict, NamedTuple, Optional, Tuple

import torch

from . import ext_loader

ATTN_IMPLS = ('auto', 'ext', 'triton', 'pytorch')
OPS = ('local_attention', 'pooled_attention', 'gelu_gate', 'position_bias_mlp', 'memory_lean')

BUILD_HINT = ('build it with `bash tools/setup_env.sh` (or `pip install --no-build-isolation -e .` with torch '
              'installed; add FORCE_CUDA=1 for the CUDA kernels), or set attn_impl="pytorch"')
TRITON_MIN_VERSION = (3, 0)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# What each op's kernels take: backend -> (devices, dtypes). 'memory_lean' is the set of autograd functions that keep
# less for backward (attention.py, conv_glu.py): plain PyTorch, used whenever the attention is not the reference.
OP_SUPPORT: Dict[str, Dict[str, Tuple[Tuple[str, ...], Tuple[torch.dtype, ...]]]] = {
    'local_attention': {
        'ext': (('cpu', 'cuda'), _FLOATS),
        'triton': (('cuda', 'cpu'), _FLOATS[:3])
    },
    'pooled_attention': {
        'ext': (('cpu', 'cuda'), _FLOATS),
        'triton': (('cuda', 'cpu'), _FLOATS[:3])
    },
    # fused on the CPU only: on a GPU PyTorch's own kernels are as fast
    'gelu_gate': {
        'ext': (('cpu', ), (torch.float32, torch.float64))
    },
    'position_bias_mlp': {
        'ext': (('cpu', ), (torch.float32, torch.float64))
    },
    'memory_lean': {
        'ext': (('cpu', 'cuda'), _FLOATS),
        'triton': (('cuda', 'cpu'), _FLOATS)
    },
}

# 'auto' measures these ops' backends on the device in use (autotune.py); the others have one kernel backend, on
# the CPU only, and follow the static table
MEASURED_OPS = ('local_attention', 'pooled_attention')

# The static table: 'auto''s choice where nothing is measured, per (op, device type, training): the backends to try,
# first that can run wins. On the CPU the op is measured faster than PyTorch for every op (docs/benchmark.md). On a
# GPU, training used to keep PyTorch's written-out softmax: the first CUDA kernels' backward was slower (H200, step
# 0.59 s against 0.34 s). Those kernels have since been rewritten and nobody has timed them, while their memory is
# counted for today's code: 'ext' takes 1.23x Swin-T's memory where the written-out softmax takes 3.26x
# (tools/analysis/gpu_memory.py --benchmark-rows), 7.8 against 18.4 GiB for Mask R-CNN-T's step. Out of memory stops
# a run, slower does not, so unmeasured GPU training takes the op too. Triton stays out of the static table: it has
# never run on a GPU, and where it can, the measurement (which verifies it first) decides.
AUTO_ORDER: Dict[Tuple[str, str, bool], Tuple[str, ...]] = {}
_AUTO_DEFAULT = ('ext', 'pytorch')

logger = logging.getLogger(__name__)

# Meta tensors (the memory count, mmtransnext.utils.memory_count) stand for tensors of this device type, when set: the
# backends are chosen as they would be there, from the kernels the package has rather than those built here.
_planned_device = [None]


@contextmanager
def planning_for(device_type: str):
    """Choose the backends for meta tensors as for ``device_type`` tensors (and let their fake kernels allocate
    what that device's kernels allocate) while active."""
    if device_type not in ('cpu', 'cuda'):
        raise ValueError(f'the memory count plans for cpu or cuda, not {device_type!r}')
    previous, _planned_device[0] = _planned_device[0], device_type
    try:
        yield
    finally:
        _planned_device[0] = previous


def device_type_of(device) -> str:
    """The device type whose kernels run for tensors on ``device``: a meta tensor's is the planned one."""
    device_type = torch.device(device).type
    if device_type == 'meta' and _planned_device[0] is not None:
        return _planned_device[0]
    return device_type


def autocast_state(device_type: str) -> Tuple[bool, torch.dtype]:
    """Whether autocast is on for ``device_type`` ('cpu' or 'cuda'), and its type (torch < 2.4 names them per
    device)."""
    if hasattr(torch, 'get_autocast_dtype'):
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    if device_type == 'cuda':
        return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def set_autocast_state(device_type: str, enabled: bool, dtype: torch.dtype) -> None:
    """Switch autocast's flags for ``device_type`` ('cpu' or 'cuda'); they change nothing for other devices'
    tensors (CUDA's can be set without a GPU)."""
    if hasattr(torch, 'get_autocast_dtype'):
        torch.set_autocast_enabled(device_type, enabled)
        torch.set_autocast_dtype(device_type, dtype)
    elif device_type == 'cuda':
        torch.set_autocast_enabled(enabled)
        torch.set_autocast_gpu_dtype(dtype)
    else:
        torch.set_autocast_cpu_enabled(enabled)
        torch.set_autocast_cpu_dtype(dtype)


def autocast_dtype(device) -> Optional[torch.dtype]:
    """The type autocast multiplies in for tensors on ``device`` (a meta tensor's: its planned device's), or None
    where autocast is off."""
    device_type = device_type_of(device)
    if device_type not in ('cpu', 'cuda'):
        return None
    enabled, dtype = autocast_state(device_type)
    return dtype if enabled else None


def in_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` cast to autocast's type where autocast is on for its device (and ``x`` is floating), else ``x``: one
    cast for several products that read it, where autocast would cast it for each and each would keep its copy."""
    dtype = autocast_dtype(x.device)
    return x if dtype is None or not x.is_floating_point() else x.to(dtype)


def planned_device_type() -> str:
    """What meta tensors stand for now ('cuda' when nobody said)."""
    return _planned_device[0] or 'cuda'


class Choice(NamedTuple):
    """The backend an op runs on, and why."""
    backend: str
    reason: str


def triton_status(device_type: str) -> Tuple[bool, str]:
    """Whether the Triton kernels can run on ``device_type``, and if not, what to do."""
    try:
        import triton
    except Exception:  # not installed, or an install that fails to import
        return False, 'Triton is not installed (it comes with the CUDA builds of torch: `pip install triton`)'
    version = tuple(int(part) for part in triton.__version__.split('.')[:2])
    if version < TRITON_MIN_VERSION:
        return False, f'Triton {triton.__version__} is too old (the kernels need Triton >= 3.0)'
    if device_type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        return False, ('Triton runs on CPU tensors only through its interpreter: set TRITON_INTERPRET=1 before '
                       'starting Python (slow; meant for checking the kernels), or run on a GPU')
    if device_type not in ('cpu', 'cuda'):
        return False, f'Triton has no kernels for {device_type} tensors here'
    return True, f'Triton {triton.__version__}' + (' (interpreter)' if device_type == 'cpu' else '')


def _unavailable(op: str,
                 backend: str,
                 device_type: str,
                 dtype: Optional[torch.dtype],
                 planning: bool = False) -> Optional[str]:
    """Why ``backend`` cannot run ``op`` here, or None when it can. ``planning``: for meta tensors standing for
    ``device_type`` tensors, whose fake kernels exist whatever was built here."""
    support = OP_SUPPORT[op].get(backend)
    if support is None:
        return f'{op} has no {backend} kernels'
    devices, dtypes = support
    if device_type not in devices:
        return f'{op} has no {backend} kernels for {device_type} tensors'
    if dtype is not None and dtype not in dtypes:
        names = ', '.join(str(d).replace('torch.', '') for d in dtypes)
        return f'{op}\'s {backend} kernels take {names}, not {str(dtype).replace("torch.", "")}'
    if planning:
        return None
    if backend == 'ext':
        if ext_loader.ext is None:
            return f'the attention op mmtransnext._ext is not built; {BUILD_HINT}'
        if not ext_loader.ext_available(device_type):
            return f'mmtransnext._ext was built without kernels for {device_type}; {BUILD_HINT}'
    if backend == 'triton':
        ok, why = triton_status(device_type)
        if not ok:
            return why
    return None


def check_attn_impl(attn_impl: str) -> None:
    """Fail at build time on an unknown name, or on a backend that cannot run on any device here."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
    if attn_impl == 'auto':
        autotune.autotune_enabled()  # an unknown MMTRANSNEXT_AUTOTUNE fails here, naming the allowed values
    if attn_impl == 'ext' and ext_loader.ext is None:
        raise RuntimeError(f'attn_impl="ext": the attention op mmtransnext._ext is not built; {BUILD_HINT}')
    if attn_impl == 'triton':
        ok, why = triton_status('cuda')
        if not ok and why.startswith('Triton'):  # not installed / too old; the device is checked per forward
            raise RuntimeError(f'attn_impl="triton": {why}; or set attn_impl="auto"')


def in_traced_graph() -> bool:
    """True while torch.compile / torch.export trace (the spellings differ across torch 2.1-2.14)."""
    is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3
    is_exporting = getattr(torch.compiler, 'is_exporting', None)  # torch < 2.7: export traces through dynamo
    return is_compiling() or (is_exporting is not None and is_exporting())


def in_compiled_graph() -> bool:
    """True while torch.compile traces, not torch.export (whose programs, and the ONNX files made from them, keep
    the operations eager runs). Where inductor compiles a graph for symbolic sizes, a few layers spell an operation
    differently (conv_glu.py, attention.py: the reasons are there); the values are the same up to float rounding."""
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return in_traced_graph() and not (is_exporting is not None and is_exporting())


def choose_backend(op: str,
                   attn_impl: str,
                   device,
                   dtype: Optional[torch.dtype] = None,
                   training: bool = False,
                   workload=None) -> Choice:
    """The backend that runs ``op`` for tensors on ``device`` of ``dtype``, in training (autograd on) or not.

    Named backends that cannot run raise an error saying why; ``'auto'`` falls back and the reason says why.
    ``workload`` (:class:`.autotune.Workload`, given by the attention ops): under ``'auto'`` the decision is measured
    and verified on the device for its kernel configuration. Each distinct decision is made once and logged once.
    """
    device_type = device_type_of(device)
    planning = torch.device(device).type == 'meta' and _planned_device[0] is not None
    if attn_impl == 'auto' and workload is not None and op in MEASURED_OPS:
        return _auto_measured(op, torch.device(device), device_type, dtype, bool(training), workload, planning)
    if in_traced_graph():  # the tracer runs the decision itself (no cache, no logging in a graph)
        return _decide(op, attn_impl, device_type, dtype, bool(training), planning)
    # what the answer depends on beyond the arguments (tests swap the extension out; the interpreter is an env var)
    environment = (id(ext_loader.ext), os.environ.get('TRITON_INTERPRET'), planning)
    return _decide_once(op, attn_impl, device_type, dtype, bool(training), environment)


def _auto_measured(op, device, device_type, dtype, training, workload, planning) -> Choice:
    """``'auto'`` for a measured op: the decision measured (now, or before and cached), else the static table.

    Triton's interpreter (CPU tensors, ``TRITON_INTERPRET=1``) checks arithmetic and is ~100x slower than the other
    backends (11-14 s to measure one op here): it is a candidate only where ``MMTRANSNEXT_AUTOTUNE_INTERPRETED=1``
    asks for it."""
    if in_traced_graph():  # torch.compile / torch.export: sizes may be symbolic, nothing is measured or looked up
        return _decide(op, 'auto', device_type, dtype, training, planning)
    traced = torch.jit.is_tracing() or _in_onnx_export()
    static = (_decide(op, 'auto', device_type, dtype, training, planning) if traced else _decide_once(
        op, 'auto', device_type, dtype, training, (id(ext_loader.ext), os.environ.get('TRITON_INTERPRET'), planning)))
    candidates = [
        b for b in ('ext', 'triton') if _unavailable(op, b, device_type, dtype, planning) is None and (
            b != 'triton' or device_type != 'cpu' or os.environ.get('MMTRANSNEXT_AUTOTUNE_INTERPRETED') == '1')
    ]
    if not candidates:
        return static

    def decided(on, may_measure: bool, may_read: bool, why_static: str) -> Choice:
        """The decision for ``on`` (a device, or None for none), else the static table saying why."""
        settled = on is not None and autotune.choice(op, on, autotune.precision(device_type, dtype), training, workload,
                                                     candidates, may_measure, may_read)
        return Choice(*settled) if settled else Choice(static.backend, f'{static.reason} (static table: {why_static})')

    if traced:  # nothing is measured in a TorchScript trace; it takes what this process decided before
        return decided(device, False, False, 'nothing is measured while tracing')
    if not autotune.autotune_enabled():
        return decided(None, False, False, 'MMTRANSNEXT_AUTOTUNE=0')
    if device.type == 'meta':  # the memory planner: what this machine measured for the planned device, if anything
        measured = torch.device(device_type) if device_type == 'cpu' or torch.cuda.is_available() else None
        choice = decided(measured, False, True, f'nothing measured for {device_type} on this machine')
        autotune.assumed[(op, workload.config)] = choice  # the planner says what it assumed
        return choice
    return decided(device, True, True, 'measuring failed, see the warning')


def _in_onnx_export() -> bool:
    is_exporting = getattr(torch.onnx, 'is_in_onnx_export', None)
    return bool(is_exporting and is_exporting())


@lru_cache(maxsize=None)
def _decide_once(op, attn_impl, device_type, dtype, training, environment) -> Choice:
    choice = _decide(op, attn_impl, device_type, dtype, training, environment[-1])
    logger.debug('mmtransnext %s on %s (%s, %s): %s (%s)', op, device_type, dtype, 'train' if training else 'eval',
                 choice.backend, choice.reason)
    return choice


def _decide(op: str,
            attn_impl: str,
            device_type: str,
            dtype: Optional[torch.dtype],
            training: bool,
            planning: bool = False) -> Choice:
    if op not in OPS:
        raise ValueError(f'unknown op {op!r}; one of {OPS}')
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
    if op == 'memory_lean':  # follows the attention: the reference path keeps autograd's own functions
        attention = _decide('local_attention', attn_impl, device_type, None, training, planning)
        if attention.backend == 'pytorch':
            return Choice('pytorch', f'reference autograd ({attention.reason})')
        return Choice(attention.backend, 'keeps less for backward')
    if attn_impl == 'pytorch':
        return Choice('pytorch', 'attn_impl="pytorch"')
    if attn_impl == 'auto':
        skipped = []
        order = AUTO_ORDER.get((op, device_type, training), _AUTO_DEFAULT)
        for backend in order:
            why = None if backend == 'pytorch' else _unavailable(op, backend, device_type, dtype, planning)
            if why is None:
                if skipped:
                    return Choice(backend, 'auto: ' + '; '.join(skipped))
                if order != _AUTO_DEFAULT:
                    mode = 'training' if training else 'inference'
                    return Choice(backend, f'auto: fastest measured for {device_type} {mode}')
                return Choice(backend, 'auto: first choice')
            skipped.append(why)
    why = _unavailable(op, attn_impl, device_type, dtype, planning)
    if why is None:
        return Choice(attn_impl, f'attn_impl="{attn_impl}"')
    if op in ('gelu_gate', 'position_bias_mlp'):  # optional fusions: PyTorch's ops are the fallback
        return Choice('pytorch', why)
    raise RuntimeError(f'attn_impl="{attn_impl}": {why}')


def backend_table(attn_impl: str,
                  device,
                  dtype: Optional[torch.dtype] = None,
                  training: bool = False) -> Dict[str, Choice]:
    """Every op's choice for one setting (the benchmark prints it)."""
    return {op: choose_backend(op, attn_impl, device, dtype, training) for op in OPS}


def resolve_attn_impl(attn_impl: str, device) -> str:
    """The backend of the attention's local and pooled ops on ``device`` (for callers that want one name)."""
    return choose_backend('local_attention', attn_impl, device).backend


from . import autotune  # noqa: E402  (it reads this module's autocast state and planning device)
