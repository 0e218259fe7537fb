"""GPU memory of a training step, counted on tensors that hold no data (meta tensors).

The peak allocated memory of a step (``torch.cuda.max_memory_allocated``) depends on the shapes, types and lifetimes
of its tensors, not on their values. :class:`MemoryCounter` follows every storage that torch creates while it is
active (and those handed to :meth:`MemoryCounter.track`): it adds each one's size, rounded up to the 512 bytes of
CUDA's caching allocator, when the storage is created and takes it off when the storage dies, and keeps the maximum.
On meta tensors this is a whole training step of a detector in seconds, with no GPU and no real memory.

What it sees:

* every tensor an ATen op returns, forward and backward (it is a ``TorchDispatchMode``);
* inside mmtransnext's own ops (``mmtransnext::*``), what their implementation allocates, through the op's kernel
  (real tensors) or its fake kernel (meta tensors) run inside the count: outputs and workspaces alike;
* per storage, what it is: ``state`` (parameters, their gradients, optimizer state: whatever was ``track``-ed
  as such, and gradients as autograd accumulates them), ``workspaces`` (allocated inside an mmtransnext kernel and
  not returned) or ``activations`` (everything else: inputs, saved tensors, temporaries);
* the module running when the peak was reached (``torch.utils.module_tracker``).

What it does not see: what a GPU library allocates behind torch's back (cuBLAS / cuDNN workspaces, kernels'
internal temporaries) and the caching allocator's fragmentation; about 3% of a step, measured against an H200
(docs/gpu_memory.md).

Meta tensors have no values, so an op whose output *shape* depends on values cannot run on them. The counter
replaces each such op with the largest result it could have (``nonzero`` of an all-true mask, ``unique`` of distinct
values: an upper bound on what follows), reads every scalar as 1 (True for a condition) and copies meta tensors to the
CPU as zeros (e.g. for a Hungarian matching), and lists each replacement in :attr:`MemoryCounter.approximations`.
Small meta tensors made from known values (ground truth, feature shapes) keep those values, and ops on them alone
run on the values too, so that what depends on them only is exact.
"""
import weakref
from collections import Counter
from typing import Dict, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from ..ops.registration import KERNELS

ALLOCATION_ROUND = 512  # bytes: CUDA's caching allocator rounds every block up to a multiple of this
SMALL = 2**22  # elements: meta tensors up to this size made from known values (e.g. ground truth) keep them
CATEGORIES = ('state', 'activations', 'workspaces')

aten = torch.ops.aten
# ops whose output shape (or a Python value) depends on the input's values
DATA_DEPENDENT = frozenset({
    aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.masked_select, aten._unique2, aten.unique_consecutive,
    aten.unique_dim, aten.index, aten._to_copy, aten.equal
})


def allocated_bytes(nbytes: int) -> int:
    """What the caching allocator hands out for a request of ``nbytes``."""
    return -(-nbytes // ALLOCATION_ROUND) * ALLOCATION_ROUND


class MemoryCounter(TorchDispatchMode):
    """Counts the live storages of the tensors torch creates while active (see the module docstring).

    Args:
        device (str): the device type whose storages are counted: 'meta' (planning) or 'cpu' (checking the count
            against real tensors).

    Attributes:
        current (int): bytes alive now. ``peak`` (int): the most alive at once.
        peak_categories (dict): the peak split into :data:`CATEGORIES`. ``category_peaks`` (dict): the most of each
            category alive at once, at any time.
        peak_module (str): the innermost module running at the peak ('' outside any), with ' (backward)' in
            backward. ``phase`` (str): a label the caller sets ('forward', 'backward', ...), recorded with the peak.
        approximations (Counter): data-dependent ops replaced on meta tensors, and how often;
            ``approximated_peak`` (int): the most bytes of their (largest-case) results alive at once.
    """

    def __init__(self, device: str = 'meta'):
        super().__init__()
        self.device = torch.device(device).type  # storages elsewhere (e.g. the CPU's, on the host) are not counted
        self.current = 0
        self.peak = 0
        self.peak_categories = dict.fromkeys(CATEGORIES, 0)
        self.category_peaks = dict.fromkeys(CATEGORIES, 0)
        self.peak_module = ''
        self.peak_phase = ''
        self.phase = ''
        self.approximations = Counter()
        self.approximated_peak = 0  # the most bytes of replaced ops' results alive at once
        self._approximated_live = 0
        self._approximating = False
        self._live: Dict[int, list] = {}  # storage id -> [bytes, category, weakref, made by a replaced op]
        self._by_category = dict.fromkeys(CATEGORIES, 0)
        self._kernel_depth = 0
        self._modules = None
        self._values = WeakTensorKeyDictionary()  # small meta tensor -> its values on the CPU

    # ------------------------------------------------------------------------- what is alive
    def track(self, tensors: Iterable[torch.Tensor], category: str = 'activations') -> None:
        """Count tensors that exist already (parameters, optimizer state, the batch) as ``category``; a storage
        counted before moves to ``category``."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._add(t, category, recategorize=True)
        self._note_peak()

    def _add(self, t: torch.Tensor, category: str, recategorize: bool = False) -> None:
        if t.device.type != self.device:
            return
        storage = t.untyped_storage()
        key = id(storage)
        entry = self._live.get(key)
        if entry is not None:
            if recategorize and entry[1] != category:
                self._by_category[entry[1]] -= entry[0]
                self._by_category[category] += entry[0]
                entry[1] = category
            return
        nbytes = allocated_bytes(storage.nbytes())
        entry = [nbytes, category, None, self._approximating]
        entry[2] = weakref.ref(storage, lambda _, key=key: self._release(key))
        self._live[key] = entry
        self.current += nbytes
        self._by_category[category] += nbytes
        if self._approximating:
            self._approximated_live += nbytes
            self.approximated_peak = max(self.approximated_peak, self._approximated_live)

    def _release(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current -= entry[0]
            self._by_category[entry[1]] -= entry[0]
            if entry[3]:
                self._approximated_live -= entry[0]

    def _note_peak(self) -> None:
        for name, nbytes in self._by_category.items():
            self.category_peaks[name] = max(self.category_peaks[name], nbytes)
        if self.current > self.peak:
            self.peak = self.current
            self.peak_categories = dict(self._by_category)
            self.peak_phase = self.phase
            self.peak_module = self._innermost_module()

    def _innermost_module(self) -> str:
        if self._modules is None:
            return ''
        names = [name for name in self._modules.parents if name != 'Global']
        if not names:
            return ''
        name = max(names, key=lambda n: (n.count('.'), len(n)))
        return name + (' (backward)' if self._modules.is_bw else '')

    # ------------------------------------------------------------------------- the mode
    def __enter__(self):
        from torch.utils.module_tracker import ModuleTracker
        if self._kernel_depth == 0 and self._modules is None:
            self._modules = ModuleTracker()
            self._modules.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        if self._kernel_depth == 0 and self._modules is not None:
            self._modules.__exit__(*exc)
            self._modules = None
        return result

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._run(func, args, kwargs)  # sets _approximating when it replaced the op
        category = 'workspaces' if self._kernel_depth else 'activations'
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, category)
        self._approximating = False
        self._note_peak()
        return out

    def _run(self, func, args, kwargs):
        name = func._schema.name
        kernels = KERNELS.get(name)
        meta = any(isinstance(t, torch.Tensor) and t.is_meta for t in tree_flatten((args, kwargs))[0])
        if kernels is not None:  # our op: its own implementation, inside the count
            kernel = kernels[1] if meta else kernels[0]
            self._kernel_depth += 1
            try:
                with self:
                    out = kernel(*args, **kwargs)
            finally:
                self._kernel_depth -= 1
            for t in tree_flatten(out)[0]:  # what it returns is the caller's, not a workspace
                if isinstance(t, torch.Tensor):
                    self._add(t, 'activations', recategorize=True)
            return out
        if not meta:
            out = func(*args, **kwargs)
            if func.overloadpacket in (aten._to_copy, aten.lift_fresh_copy, aten.lift_fresh) and isinstance(
                    out, torch.Tensor) and out.is_meta and out.numel() <= SMALL:  # values a meta tensor starts with
                self._values[out] = args[0].detach().clone()
            return out
        known = self._known_values(func, args, kwargs)
        if known is not None:
            return known
        replaced = self._data_dependent(func, args, kwargs)
        if replaced is not NotImplemented:
            self.approximations[str(func.overloadpacket.__name__)] += 1
            self._approximating = True
            return replaced
        return func(*args, **kwargs)

    def _known_values(self, func, args, kwargs):
        """Small meta tensors made from known values (the shapes of feature maps, level offsets ...) keep them: an
        op on such tensors alone runs on their values too, so a scalar read from them, or a data-dependent op on
        them, is exact. Returns the output where it comes from the values alone, else None."""
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_meta]
        if not all(t in self._values for t in tensors):
            return None
        on_cpu = tree_map(lambda t: self._values[t] if isinstance(t, torch.Tensor) and t.is_meta else t, (args, kwargs))
        cpu_args, cpu_kwargs = on_cpu
        if 'device' in cpu_kwargs and torch.device(cpu_kwargs['device']).type == 'meta':
            cpu_kwargs = dict(cpu_kwargs, device='cpu')
        try:
            values = func(*cpu_args, **cpu_kwargs)
        except Exception:  # noqa: BLE001 (an op the values cannot run: the meta path decides)
            return None
        if not isinstance(values, torch.Tensor) and not isinstance(values, (tuple, list)):
            return values  # a scalar read from known values
        target = kwargs.get('device')
        if func.overloadpacket is aten._to_copy and target is not None and torch.device(target).type != 'meta':
            return values  # copied off the meta device: the values themselves
        if func.overloadpacket in DATA_DEPENDENT:
            out = tree_map(lambda v: v.to('meta') if isinstance(v, torch.Tensor) else v, values)
        else:
            out = func(*args, **kwargs)
        for o, v in zip(tree_flatten(out)[0], tree_flatten(values)[0]):
            if isinstance(o, torch.Tensor) and o.is_meta and isinstance(v, torch.Tensor) and v.numel() <= SMALL:
                self._values[o] = v
        return out

    # ------------------------------------------------------------------------- meta tensors have no values
    def _data_dependent(self, func, args, kwargs):
        """The largest result a data-dependent op could have on meta tensors, or NotImplemented."""
        packet = func.overloadpacket
        if packet in (aten._local_scalar_dense, aten.is_nonzero):  # a sanity check passes; a count is 1
            return True if args[0].dtype == torch.bool else 1
        if packet is aten.nonzero:
            x = args[0]
            return x.new_empty((x.numel(), x.dim()), dtype=torch.long)
        if packet is aten.masked_select:
            x, mask = args[:2]
            return x.new_empty(torch.broadcast_shapes(x.shape, mask.shape).numel())
        if packet in (aten._unique2, aten.unique_consecutive, aten.unique_dim):
            x = args[0]
            return (x.new_empty(x.numel()), x.new_empty(x.shape,
                                                        dtype=torch.long), x.new_empty(x.numel(), dtype=torch.long))
        if packet is aten.index and any(i is not None and i.dtype == torch.bool for i in args[1]):
            indices = []
            for i in args[1]:
                if i is not None and i.dtype == torch.bool:
                    indices += list(self._data_dependent(aten.nonzero.default, (i, ), {}).unbind(1))
                else:
                    indices.append(i)
            return func(args[0], indices)
        if packet is aten._to_copy and kwargs.get('device') is not None and torch.device(kwargs['device']).type != \
                'meta':
            return torch.zeros(args[0].shape, dtype=kwargs.get('dtype') or args[0].dtype, device=kwargs['device'])
        return NotImplemented
