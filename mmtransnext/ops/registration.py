"""How every op is registered: one helper, one pattern.

An op is a forward and a backward kernel call (plain functions with type annotations), fake (meta) versions of
both, ``setup_context`` (what the forward keeps) and ``grad`` (the backward in terms of what it kept).

The extension's ops are defined in C++ (``TORCH_LIBRARY_FRAGMENT(mmtransnext, ...)`` in each op's dispatcher,
``csrc/pytorch/<op>.cpp``, with their CPU / CUDA kernels), so that ``torch.ops.load_library`` of the built module
alone runs them (exported programs, AOTInductor packages); here they get their fake kernels and autograd. The other
ops (Triton) are ``torch.library.custom_op``s defined here.
"""
from typing import Callable, Dict, Tuple

import torch

HAS_CUSTOM_OP = hasattr(torch.library, 'custom_op')  # torch >= 2.4 (and torch.library.register_fake / _autograd)

# 'mmtransnext::<name>' -> (kernel, fake): the memory counter (mmtransnext.utils.memory_count) runs an op's own
# Python implementation inside its count, so that what the op allocates inside (workspaces) is counted too
KERNELS: Dict[str, Tuple[Callable, Callable]] = {}

# '<name>' -> the Python function of an op defined in C++ (the extension's pybind function that its registered kernel
# is): ext_loader.replaced runs these instead of the registered kernels
EXTENSION_KERNELS: Dict[str, Callable] = {}


def _defined_in_cpp(name: str) -> bool:
    """Whether the built extension defined ``mmtransnext::<name>`` (it is loaded by importing ``ext_loader``)."""
    return hasattr(torch.ops.mmtransnext, name)


def _not_built(name: str) -> Callable:

    def op(*args, **kwargs):
        raise RuntimeError(f'mmtransnext::{name} is an op of mmtransnext._ext, which is not built; build it with '
                           '`bash tools/setup_env.sh` (or `pip install --no-build-isolation -e .`)')

    return op


def register_op(name: str,
                forward: Callable,
                backward: Callable,
                forward_fake: Callable,
                backward_fake: Callable,
                setup_context: Callable,
                grad: Callable,
                custom_op: bool = HAS_CUSTOM_OP,
                runs_on_meta: bool = False,
                in_extension: bool = False) -> Tuple[Callable, Callable]:
    """``mmtransnext::<name>`` and ``mmtransnext::<name>_backward`` with fake kernels and registered autograd
    (``torch.compile`` and ``torch.export`` trace them); on torch < 2.4 (or ``custom_op=False``) an
    ``autograd.Function`` built from the same pieces. Returns the callables (forward with autograd, backward).

    ``in_extension``: the two ops are defined in C++ by the extension, whose registered kernels are ``forward`` /
    ``backward`` (they call its pybind functions, the same C++ functions): torch.library adds the fake kernels and
    autograd to them (torch >= 2.4), the ``autograd.Function`` calls them through ``torch.ops``; otherwise
    ``torch.library.custom_op`` defines them here around ``forward`` / ``backward``.

    ``runs_on_meta``: the kernels themselves run on meta tensors, allocating what they allocate on a device and
    launching nothing (the Triton launchers, the extension's pooled op through ``_MetaExtension``); the memory count
    then runs them rather than the fakes."""
    KERNELS[f'mmtransnext::{name}'] = (forward, forward if runs_on_meta else forward_fake)
    KERNELS[f'mmtransnext::{name}_backward'] = (backward, backward if runs_on_meta else backward_fake)
    if in_extension:
        if not _defined_in_cpp(name):  # built without the op: the backends never choose it
            return _not_built(name), _not_built(f'{name}_backward')
        EXTENSION_KERNELS[name], EXTENSION_KERNELS[f'{name}_backward'] = forward, backward
        forward_op = getattr(torch.ops.mmtransnext, name).default
        backward_op = getattr(torch.ops.mmtransnext, f'{name}_backward').default
        if custom_op:
            # called from here: the module that the ops' C++ definitions name (set_fake_kernels_module)
            torch.library.register_fake(forward_op, forward_fake)
            torch.library.register_fake(backward_op, backward_fake)
            torch.library.register_autograd(forward_op, grad, setup_context=setup_context)
            return forward_op, backward_op
        forward, backward = forward_op, backward_op
    elif custom_op:
        forward_op = torch.library.custom_op(f'mmtransnext::{name}', forward, mutates_args=())
        backward_op = torch.library.custom_op(f'mmtransnext::{name}_backward', backward, mutates_args=())
        forward_op.register_fake(forward_fake)
        backward_op.register_fake(backward_fake)
        forward_op.register_autograd(grad, setup_context=setup_context)
        return forward_op, backward_op

    class Op(torch.autograd.Function):

        @staticmethod
        def forward(ctx, *inputs):
            output = forward(*inputs)
            setup_context(ctx, inputs, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return grad(ctx, *grads)

    Op.__name__ = name
    return Op.apply, backward
