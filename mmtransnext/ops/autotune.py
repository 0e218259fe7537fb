"""``attn_impl='auto'`` measured and verified on the device in use.

The first time an op runs under ``'auto'`` for a new (op, device, precision, training or not, kernel configuration),
each backend that can run it is

1. **verified**: run forward and backward on the same random inputs as the ``'pytorch'`` reference, and every
   output and input gradient compared with the reference's (float32, without autocast) within a bound that follows
   from the type it computes in (:func:`tolerance`). A backend that computes wrong numbers, drops a gradient or
   raises is rejected for that op on that device (for this process and, through the cache, for later ones) and the
   log says what was wrong, where, and what to send;
2. **measured**: the median time of several runs after a warm-up (forward, and backward in training; synchronised
   on a GPU) and its peak memory (``torch.cuda.max_memory_allocated`` on a GPU; elsewhere the memory count of the
   same run on meta tensors, :mod:`mmtransnext.utils.memory_count`);
3. **chosen** (:func:`select`): the fastest of the candidates within :data:`MEMORY_SLACK` of the leanest, unless a
   fatter one is more than :data:`SPEEDUP_FOR_MEMORY` faster still.

The problem measured is the op at the first call's shapes with batch 1, shrunk on the CPU to at most
:data:`PROBE_QUERIES` (query, head) pairs, with random inputs: the decision is per kernel configuration, not per
image size, so that multi-scale training (DINO's many sizes) measures once. Decisions are logged once each, kept
for the process, written to the cache (:mod:`.decision_cache`) and, under ``torch.distributed``, made by rank 0 and
broadcast, so that every rank runs the same backend.

Nothing is measured under ``torch.compile`` / ``torch.export`` / ONNX export / ``torch.jit`` tracing, on meta tensors
(the memory planner) or with ``MMTRANSNEXT_AUTOTUNE=0``: those take the decision made before, else the static table
(``backend.AUTO_ORDER``).
"""
import math
import os
import time
from contextlib import nullcontext
from statistics import median
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backend, decision_cache

# A candidate taking more than MEMORY_SLACK x the leanest candidate's peak memory is chosen only where it is more
# than SPEEDUP_FOR_MEMORY x faster than the fastest candidate within that slack. Memory is what decides whether a
# detector trains on a GPU at all (the pooled softmax written out takes 2-3x the kernels' memory at detection sizes,
# docs/gpu_memory.md), time only how long it takes: a few percent of speed is not worth most of the memory, and 10%
# is about the run-to-run spread of timing a small problem in a busy training process.
MEMORY_SLACK = 1.10
SPEEDUP_FOR_MEMORY = 1.10

# (query, head) pairs of the problem measured, per device type: on the CPU a few seconds for a whole model's
# decisions; on a GPU a real stage at batch 1 (800 x 1216 stage 1: 3 x 60800), large enough not to time launch
# latency alone.
PROBE_QUERIES = {'cpu': 2**12, 'cuda': 2**18}
REPEATS = (3, 7)  # timed runs: at least, at most
CPU_TIME_PER_CANDIDATE = 0.1  # seconds of timed runs on the CPU, within REPEATS

# Tolerance, in units of the computing type's epsilon (torch.finfo(dtype).eps), relative to each compared tensor's
# largest magnitude. Float32 and float64: the kernels sum in other orders over up to a few thousand terms (the
# fixture tests measure up to ~40 eps on the whole model, tests/test_backbone_exactness.py); 64 eps is 7.6e-6 in
# float32, so an error of 1e-3 in an output of magnitude ~1 is 130x over the bound. Half and bfloat16: the inputs
# (or products) round once to the reduced type while the reference stays in float32: an error of a few eps of the
# reduced type, amplified by the softmax's exponent (logits up to ~5 for cosine attention). Measured on the CPU:
# up to ~1 eps (bfloat16 autocast, ext); 8 eps leaves room for other kernels' orders without passing a kernel that is
# wrong by more than a rounding.
TOLERANCE_EPS = {torch.float64: 64., torch.float32: 64., torch.bfloat16: 8., torch.float16: 8.}
# Those eps hold for sums of up to SUMMED_CALIBRATED terms (the CPU probes'); a longer sum's rounding grows with the
# square root of its length (random rounding), so the float32 / float64 bound does too (half and bfloat16 are summed
# in float32, whose rounding stays far below their bound). Measured on an H200 (tools/gpu_check.sh,
# 2026-12-04): the pooled value gradient at the 800 x 1216 probe sums 60800 queries, and the CUDA and Triton kernels,
# which agree with each other to 1e-6, differ from cuBLAS's order by 86 eps: within 64 * sqrt(60800 / 1024) = 493 eps.
SUMMED_CALIBRATED = 1024

GPU_CHECK = 'bash tools/gpu_check.sh'  # what a user runs, and sends, when a kernel fails on their device


class Workload(NamedTuple):
    """What an op is asked to compute, as the decision sees it.

    ``config``: the kernel configuration the decision is for (readable: head size, window, pool size, bias mode);
    ``shape``: what the op's problem builder needs to make inputs like the first call's (batch, heads, H, W, ...).
    """
    config: str
    shape: Tuple[int, ...]


class Problem(NamedTuple):
    """An op's work on random inputs: ``inputs`` (float32 tensors; those in ``differentiable`` get gradients) and
    ``run(backend, inputs) -> outputs`` with the named backend."""
    inputs: Dict[str, Tensor]
    differentiable: Tuple[str, ...]
    run: Callable[[str, Dict[str, Tensor]], Sequence[Tensor]]
    output_names: Tuple[str, ...]
    summed: int = 1  # terms in the longest sum into an output or a gradient (the tolerance grows with it)


# op -> problem builder (workload shape, device, generator) -> Problem; each op module registers its own
PROBLEMS: Dict[str, Callable[[Tuple[int, ...], torch.device, torch.Generator], Problem]] = {}

_settled: Dict[tuple, dict] = {}  # key -> decision: final for this process (agreed by every rank)
_file: Dict[str, dict] = {}  # device -> the cache file's section for it, as read once per process
_file_read = [False]
_unwritable = [False]
_failed = set()  # keys whose measuring failed: the static table, not measured again in this process
_rejected: Dict[str, Dict[str, str]] = {}  # device -> {'<op>/<backend>': why}: never used again on that device
assumed: Dict[Tuple[str, str], tuple] = {}  # (op, config) -> Choice taken on meta tensors (the memory planner)
measurements = []  # every decision this process measured: (key, decision); the tools and tests read it


def register_problem(op: str, builder: Callable) -> None:
    PROBLEMS[op] = builder


def autotune_enabled() -> bool:
    """``MMTRANSNEXT_AUTOTUNE``: '1' (the default) measures, '0' keeps the static table."""
    value = os.environ.get('MMTRANSNEXT_AUTOTUNE', '1').strip()
    if value not in ('0', '1'):
        raise ValueError(f'MMTRANSNEXT_AUTOTUNE={value!r}: it must be 1 (attn_impl="auto" measures and verifies the '
                         'backends on the device in use; the default) or 0 (the static table, for fully reproducible '
                         'runs)')
    return value == '1'


def forget() -> None:
    """Drop what this process decided and read (tests; ``tools/analysis/backends.py`` measuring anew)."""
    _settled.clear()
    _file.clear()
    _rejected.clear()
    _failed.clear()
    _file_read[0] = _unwritable[0] = False
    measurements.clear()


# ----------------------------------------------------------------------------- devices and keys

_device_names: Dict[tuple, str] = {}


def device_name(device: torch.device) -> str:
    """The device a measurement holds for: a GPU's name and compute capability, a CPU's model and thread count."""
    threads = torch.get_num_threads()
    memo = (device.type, device.index, threads)
    name = _device_names.get(memo)
    if name is None:
        if device.type == 'cuda':
            index = device.index if device.index is not None else torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            name = f'cuda {torch.cuda.get_device_name(index)} (sm_{major}{minor})'
        elif device.type == 'cpu':
            name = f'cpu {_cpu_model()} ({threads} threads)'
        else:
            name = device.type
        _device_names[memo] = name
    return name


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def precision(device_type: str, dtype: Optional[torch.dtype]) -> str:
    """The type an op computes in: 'autocast-bfloat16' under autocast, else its tensors' type."""
    name = str(dtype or torch.float32).replace('torch.', '')
    enabled, reduced = backend.autocast_state(device_type) if device_type in ('cpu', 'cuda') else (False, None)
    if enabled and dtype != torch.float64:
        return 'autocast-' + str(reduced).replace('torch.', '')
    return name


def _key_text(key: tuple) -> str:
    op, _, precision_name, training, config = key
    return f'{op} | {precision_name} | {"train" if training else "eval"} | {config}'


# ----------------------------------------------------------------------------- the decision


def choice(op: str, device: torch.device, precision_name: str, training: bool, workload: Workload,
           candidates: List[str], may_measure: bool, may_read: bool) -> Optional[Tuple[str, str]]:
    """(backend, reason) for ``op`` under ``'auto'``, or None where nothing was measured and nothing may be now (the
    caller takes the static table). ``candidates``: the kernel backends that can run here ('pytorch' always can)."""
    key = (op, device_name(device), precision_name, bool(training), workload.config)
    decision = _settled.get(key)
    if decision is None:
        if not may_measure:
            decision = _cached(key, candidates) if may_read else None
            return None if decision is None else (decision['backend'], _reason(decision, cached=True))
        if key in _failed:
            return None
        # rank 0 reads the cache or measures; every rank comes here for the same key at the same point
        try:
            decision = _agreed(lambda: _cached(key, candidates) or _measure(key, workload, device, candidates))
        except Exception as error:  # a bug of the measuring itself must not stop training: the static table runs
            _failed.add(key)
            _warn(f'measuring {_key_text(key)} failed ({type(error).__name__}: {error}); the static table decides')
            return None
        _settled[key] = decision
        _log(key, decision)
    return decision['backend'], _reason(decision, cached=decision.get('from_cache', False))


def cached_decisions(device: torch.device) -> Dict[str, dict]:
    """What this process has settled or read from the cache for ``device``: key text -> decision."""
    name = device_name(device)
    _read_file()
    decisions = dict((_file.get(name) or {}).get('decisions', {}))
    decisions.update({_key_text(key): d for key, d in _settled.items() if key[1] == name})
    return decisions


def _reason(decision: dict, cached: bool) -> str:
    where = 'cached' if cached else 'measured'
    return f'auto: {where} on this device ({decision["why"]})'


def _agreed(decide: Callable[[], dict]) -> dict:
    """``decide()`` on rank 0, broadcast to every rank (one process: ``decide()``)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return decide()
    payload = [None]
    if dist.get_rank() == 0:
        try:
            payload[0] = decide()
        except Exception as error:  # the other ranks wait for the broadcast: they must hear of it too
            payload[0] = {'error': f'{type(error).__name__}: {error}'}
    dist.broadcast_object_list(payload, src=0)
    if 'error' in payload[0]:
        raise RuntimeError(f'mmtransnext: rank 0 failed to choose a backend: {payload[0]["error"]}')
    return payload[0]


# ----------------------------------------------------------------------------- the cache file


def _warn(message: str) -> None:
    _print(f'mmtransnext: {message}', warning=True)


def _read_file() -> None:
    if _file_read[0]:
        return
    _file_read[0] = True
    software = decision_cache.software_versions()
    for name, section in decision_cache.read(_warn).items():
        if section['software'] == software:
            _file[name] = section
            for op_backend, why in section.get('rejected', {}).items():
                _rejected.setdefault(name, {}).setdefault(op_backend, why)


def _cached(key: tuple, candidates: List[str]) -> Optional[dict]:
    """The cache file's decision for ``key``, where it was made among the backends this build has now."""
    _read_file()
    decision = (_file.get(key[1]) or {}).get('decisions', {}).get(_key_text(key))
    if not isinstance(decision, dict) or sorted(decision.get('candidates', ())) != sorted(candidates + ['pytorch']):
        return None  # not there, or measured among other backends (one this build lacks, or one it gained)
    if decision.get('backend') not in candidates + ['pytorch']:
        return None
    return dict(decision, from_cache=True)


def _store(key: tuple, decision: dict) -> None:
    """Add ``decision`` to the device's section and write it (only rank 0 decides under torch.distributed)."""
    name = key[1]
    section = _file.get(name)
    if section is None or section['software'] != decision_cache.software_versions():
        section = {'software': decision_cache.software_versions(), 'decisions': {}, 'rejected': {}}
        _file[name] = section
    section['decisions'][_key_text(key)] = {k: v for k, v in decision.items() if k != 'from_cache'}
    section['rejected'] = dict(_rejected.get(name, {}))
    if not _unwritable[0]:  # said once: the decisions stay in memory
        _unwritable[0] = not decision_cache.write_section(name, section, _warn)


# ----------------------------------------------------------------------------- measuring


def _outside_saved_tensor_hooks():
    """Keep the probe's saved tensors away from the caller's saved-tensor hooks while measuring: activation
    checkpointing (``with_cp``) would otherwise take them for its own and find them missing when it recomputes.
    Hooks nest and the innermost pack, so plain ones on top do it on every torch version (2.1 has no way to read or
    suspend the caller's)."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor)


def _measure(key: tuple, workload: Workload, device: torch.device, candidates: List[str]) -> dict:
    with _outside_saved_tensor_hooks():
        return _measure_now(key, workload, device, candidates)


def _measure_now(key: tuple, workload: Workload, device: torch.device, candidates: List[str]) -> dict:
    op, name, precision_name, training, _ = key
    started = time.perf_counter()
    shape = probe_shape(workload.shape, device.type)
    generator = torch.Generator().manual_seed(0)
    problem = PROBLEMS[op](shape, device, generator)
    if not precision_name.startswith('autocast-') and precision_name not in ('float32', 'float64'):
        # a model in a reduced type: the reference computes in float32 on the same (rounded) values
        reduced = getattr(torch, precision_name)
        problem = problem._replace(inputs={
            n: t.to(reduced).float() if t.is_floating_point() else t
            for n, t in problem.inputs.items()
        })
    results: Dict[str, dict] = {}
    reference = None
    for candidate in candidates + ['pytorch']:
        why_not = _rejected.get(name, {}).get(f'{op}/{candidate}')
        if why_not is not None:
            results[candidate] = {'status': 'rejected before', 'reason': why_not}
            continue
        try:
            if candidate != 'pytorch':
                if reference is None:
                    reference = _run(problem, 'pytorch', _reference_precision(precision_name), device)
                got = _run(problem, candidate, precision_name, device)
                error, where = largest_error(got, reference)
                bound = tolerance(precision_name, problem.summed)
                if not error <= bound:
                    raise _Wrong(f'wrong by {error:.3g} (bound {bound:.3g}) at {where}')
                results[candidate] = {'status': 'verified', 'error': error, 'bound': bound}
            else:
                results[candidate] = {'status': 'reference'}
            seconds = _timed(problem, candidate, precision_name, device, training)
            peak = _peak_memory(problem, candidate, precision_name, device, training)
            results[candidate].update(ms=seconds * 1e3, peak_mib=None if peak is None else peak / 2**20)
        except Exception as error:  # a compile failure, too little shared memory, a launch error, wrong numbers
            if candidate == 'pytorch':
                raise
            status = 'wrong' if isinstance(error, _Wrong) else 'raised'
            reason = str(error) if isinstance(error, _Wrong) else f'{type(error).__name__}: {str(error)[:300]}'
            results[candidate] = {'status': status, 'reason': reason}
            _rejected.setdefault(name, {})[f'{op}/{candidate}'] = f'{status} at {_key_text(key)}: {reason}'
    chosen, why = select(results)
    decision = {
        'backend': chosen,
        'why': why,
        'candidates': sorted(results),
        'results': results,
        'probe': 'x'.join(map(str, shape)),
        'seconds': round(time.perf_counter() - started, 3),
        'when': time.strftime('%Y-%m-%d %H:%M:%S'),
    }
    measurements.append((_key_text(key), decision))
    _store(key, decision)
    return decision


class _Wrong(Exception):
    """A backend's numbers differ from the reference's by more than rounding."""


def probe_shape(shape: Tuple[int, ...], device_type: str) -> Tuple[int, ...]:
    """The first call's (batch, heads, H, W, *rest) at batch 1, H and W shrunk (aspect kept) to at most
    :data:`PROBE_QUERIES` (query, head) pairs."""
    _, heads, height, width, *rest = shape
    budget = PROBE_QUERIES.get(device_type, PROBE_QUERIES['cpu'])
    shrink = min(1., math.sqrt(budget / max(1, heads * height * width)))
    return (1, heads, max(3, int(height * shrink)), max(3, int(width * shrink)), *rest)


def _reference_precision(precision_name: str) -> str:
    return 'float64' if precision_name == 'float64' else 'float32'


def _context(precision_name: str, device_type: str):
    """Autocast as the caller has it (the candidate), or off (the reference and plain types)."""
    if precision_name.startswith('autocast-'):
        return torch.autocast(device_type, dtype=getattr(torch, precision_name.split('-', 1)[1]))
    return torch.autocast(device_type, enabled=False) if device_type in ('cpu', 'cuda') else nullcontext()


def _inputs(problem: Problem, precision_name: str, device: torch.device) -> Dict[str, Tensor]:
    """Fresh leaves on ``device``, in a model's own type where it computes in one."""
    dtype = None if precision_name.startswith('autocast-') else getattr(torch, precision_name)
    leaves = {}
    for name, t in problem.inputs.items():
        t = t.to(device)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        leaves[name] = t.detach().requires_grad_(name in problem.differentiable)
    return leaves


def _run(problem: Problem, candidate: str, precision_name: str, device: torch.device) -> Dict[str, Optional[Tensor]]:
    """Outputs and input gradients of ``candidate`` (for the same random upstream gradients whichever backend runs),
    by name, in float64 on the CPU."""
    leaves = _inputs(problem, precision_name, device)
    with torch.inference_mode(False), torch.enable_grad(), _context(precision_name, device.type):
        outputs = list(problem.run(candidate, leaves))
    generator = torch.Generator().manual_seed(1)
    upstream = [torch.randn(o.shape, generator=generator).to(o.device, o.dtype) for o in outputs]
    wanted = [leaves[name] for name in problem.differentiable]
    grads = torch.autograd.grad(outputs, wanted, upstream, allow_unused=True)
    got = dict(zip(problem.output_names, outputs))
    got.update({f'grad {name}': grad for name, grad in zip(problem.differentiable, grads)})
    return {name: None if t is None else t.detach().to('cpu', torch.float64) for name, t in got.items()}


def largest_error(got: Dict[str, Optional[Tensor]], want: Dict[str, Tensor]) -> Tuple[float, str]:
    """The largest difference of ``got`` from ``want`` relative to each tensor's largest magnitude, and where
    ('grad key[0, 1, 5, 3]: 0.1234, reference 0.1244'); infinite where a tensor is missing (a dropped gradient),
    misshapen or non-finite where the reference is finite (or the other way)."""
    worst, where = 0., 'nowhere'
    for name, w in want.items():
        if w is None:
            continue
        g = got.get(name)
        if g is None:
            return math.inf, f'{name}: missing (the backend returned no gradient)'
        if g.shape != w.shape:
            return math.inf, f'{name}: shape {tuple(g.shape)}, reference {tuple(w.shape)}'
        finite = torch.isfinite(w)
        mismatch = (finite != torch.isfinite(g)) | (~finite & (g != w))
        if mismatch.any():
            index = _index(mismatch.to(torch.uint8).argmax(), w.shape)
            return math.inf, f'{name}{list(index)}: {g[index].item():.6g}, reference {w[index].item():.6g}'
        diff = (g - w).abs().masked_fill(~finite, 0)
        scale = w.abs().masked_fill(~finite, 0).max().item() if w.numel() else 0.
        if diff.numel() == 0 or scale == 0.:
            if diff.numel() and diff.max().item() > 0:
                return math.inf, f'{name}: non-zero where the reference is zero'
            continue
        relative = diff.max().item() / scale
        if relative > worst:
            index = _index(diff.argmax(), w.shape)
            worst = relative
            where = f'{name}{list(index)}: {g[index].item():.6g}, reference {w[index].item():.6g}'
    return worst, where


def _index(flat: Tensor, shape) -> tuple:
    index, flat = [], int(flat)
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def tolerance(precision_name: str, summed: int = 1) -> float:
    """The bound on :func:`largest_error` for a backend computing in ``precision_name`` whose longest sum (into an
    output or a gradient) has ``summed`` terms."""
    dtype = getattr(torch, precision_name.split('-')[-1])
    bound = TOLERANCE_EPS[dtype] * torch.finfo(dtype).eps
    if dtype in (torch.float32, torch.float64):
        # the sum's rounding; under half / bfloat16 the kernels sum in float32, far below the reduced type's bound
        bound *= max(1., math.sqrt(summed / SUMMED_CALIBRATED))
    return bound


def _step(problem: Problem,
          candidate: str,
          precision_name: str,
          device: torch.device,
          training: bool,
          device_type: Optional[str] = None) -> Callable:
    """One forward (and backward in training) of ``candidate``, as a model runs it (autocast as on ``device_type``,
    for meta tensors standing for that device's)."""
    leaves = _inputs(problem, precision_name, device)

    def step():
        with torch.inference_mode(False), torch.set_grad_enabled(training), _context(
                precision_name, device_type or device.type):
            outputs = [o for o in problem.run(candidate, leaves)]
        if training:
            wanted = [leaves[name] for name in problem.differentiable]
            torch.autograd.grad(outputs, wanted, [torch.ones_like(o) for o in outputs], allow_unused=True)

    return step


def _timed(problem, candidate, precision_name, device, training) -> float:
    step = _step(problem, candidate, precision_name, device, training)
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    step()  # warm-up (the verification ran it once before: compiled kernels, allocator)
    times = []
    while len(times) < REPEATS[1]:
        synchronize()
        began = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - began)
        if len(times) >= REPEATS[0] and device.type != 'cuda' and sum(times) > CPU_TIME_PER_CANDIDATE:
            break
    return median(times)


def _peak_memory(problem, candidate, precision_name, device, training) -> Optional[int]:
    """Bytes the op allocates at its peak beyond its inputs (None where it cannot be counted)."""
    if device.type == 'cuda':
        step = _step(problem, candidate, precision_name, device, training)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:  # the count needs torch >= 2.4 (torch.utils.module_tracker); older torch chooses by time alone
        from torch.utils.module_tracker import ModuleTracker  # noqa: F401
    except ImportError:
        return None
    from ..utils.memory_count import MemoryCounter
    planned = device.type if device.type in ('cpu', 'cuda') else 'cpu'
    meta = Problem({n: t.to('meta') for n, t in problem.inputs.items()}, *problem[1:])
    step = _step(meta, candidate, precision_name, torch.device('meta'), training, planned)
    with backend.planning_for(planned), MemoryCounter() as counter:
        step()
    return counter.peak


def select(results: Dict[str, dict]) -> Tuple[str, str]:
    """The backend to run, and why, from the measured candidates (see :data:`MEMORY_SLACK`)."""
    timed = {b: r for b, r in results.items() if 'ms' in r}
    if any(r['peak_mib'] is None for r in timed.values()):
        chosen = min(timed, key=lambda b: timed[b]['ms'])
        return chosen, 'fastest (memory not counted with this torch)'
    leanest = min(r['peak_mib'] for r in timed.values())
    lean = {b: r for b, r in timed.items() if r['peak_mib'] <= MEMORY_SLACK * leanest + 1e-9}
    best = min(lean, key=lambda b: lean[b]['ms'])
    faster = {b: r for b, r in timed.items() if b not in lean and r['ms'] * SPEEDUP_FOR_MEMORY < lean[best]['ms']}
    failed = [b for b, r in results.items() if 'ms' not in r]
    skipped = f'; {", ".join(failed)} not usable' if failed else ''
    if faster:
        chosen = min(faster, key=lambda b: faster[b]['ms'])
        return chosen, (f'{lean[best]["ms"] / timed[chosen]["ms"]:.2f}x faster than {best}, for '
                        f'{timed[chosen]["peak_mib"] / lean[best]["peak_mib"]:.2f}x its memory{skipped}')
    if len(timed) == 1:
        return best, f'the only usable backend{skipped}'
    others = [b for b in timed if b != best]
    return best, f'fastest within {MEMORY_SLACK:.2f}x of the leanest memory, against {", ".join(others)}{skipped}'


# ----------------------------------------------------------------------------- saying what it did


def describe(decision: dict) -> str:
    """One line: each candidate's time, memory, error or why it failed, and the choice."""
    cells = []
    for candidate, r in sorted(decision['results'].items()):
        if 'ms' in r:
            check = f', error {r["error"]:.2g} <= {r["bound"]:.2g}' if 'error' in r else ', reference'
            memory = '' if r['peak_mib'] is None else f' {r["peak_mib"]:.1f} MiB'
            cells.append(f'{candidate} {r["ms"]:.2f} ms{memory}{check}')
        else:
            cells.append(f'{candidate} {r["status"]}: {r["reason"]}')
    return '; '.join(cells) + f' -> {decision["backend"]} ({decision["why"]})'


def _log(key: tuple, decision: dict) -> None:
    source = 'from the cache' if decision.get('from_cache') else f'measured in {decision["seconds"]:.2f} s'
    _print(f'mmtransnext attn_impl="auto" on {key[1]}: {_key_text(key)} [probe {decision["probe"]}, {source}]: '
           f'{describe(decision)}')
    if decision.get('from_cache'):
        return
    for candidate, r in decision['results'].items():
        if r['status'] in ('wrong', 'raised'):
            _warn(
                f'the {candidate} backend of {key[0]} {"computes wrong numbers" if r["status"] == "wrong" else "fails"}'
                f' on {key[1]} ({_key_text(key)}): {r["reason"]}. It will not be used on this device; '
                f'{decision["backend"]} runs instead. Please report it with the output of `{GPU_CHECK}`.')


def _print(message: str, warning: bool = False) -> None:
    import logging

    from mmengine.logging import print_log
    print_log(message, logger='current', level=logging.WARNING if warning else logging.INFO)
