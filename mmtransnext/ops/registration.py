"""How every op of the extension is registered: one helper, one pattern.

An op is a forward and a backward kernel call (plain functions with type annotations), fake (meta) versions of
both, ``setup_context`` (what the forward keeps) and ``grad`` (the backward in terms of what it kept).
"""
from typing import Callable, Dict, Tuple

import torch

HAS_CUSTOM_OP = hasattr(torch.library, 'custom_op')  # torch >= 2.4

# 'mmtransnext::<name>' -> (kernel, fake): the memory counter (mmtransnext.utils.memory_count) runs an op's own
# Python implementation inside its count, so that what the op allocates inside (workspaces) is counted too
KERNELS: Dict[str, Tuple[Callable, Callable]] = {}


def register_op(name: str,
                forward: Callable,
                backward: Callable,
                forward_fake: Callable,
                backward_fake: Callable,
                setup_context: Callable,
                grad: Callable,
                custom_op: bool = HAS_CUSTOM_OP,
                runs_on_meta: bool = False) -> Tuple[Callable, Callable]:
    """``mmtransnext::<name>`` and ``mmtransnext::<name>_backward`` as ``torch.library`` custom ops with fake
    kernels and registered autograd (``torch.compile`` traces them); on torch < 2.4 (or ``custom_op=False``) an
    ``autograd.Function`` built from the same pieces. Returns the callables (forward with autograd, backward).

    ``runs_on_meta``: the kernels themselves run on meta tensors, allocating what they allocate on a device and
    launching nothing (the Triton launchers); the memory count then runs them rather than the fakes."""
    KERNELS[f'mmtransnext::{name}'] = (forward, forward if runs_on_meta else forward_fake)
    KERNELS[f'mmtransnext::{name}_backward'] = (backward, backward if runs_on_meta else backward_fake)
    if custom_op:
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
