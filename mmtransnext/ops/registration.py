"""How every op of the extension is registered: one helper, one pattern.

An op is a forward and a backward kernel call (plain functions with type annotations), fake (meta) versions of
both, ``setup_context`` (what the forward keeps) and ``grad`` (the backward in terms of what it kept).
"""
from typing import Callable, Tuple

import torch

HAS_CUSTOM_OP = hasattr(torch.library, 'custom_op')  # torch >= 2.4


def register_op(name: str,
                forward: Callable,
                backward: Callable,
                forward_fake: Callable,
                backward_fake: Callable,
                setup_context: Callable,
                grad: Callable,
                custom_op: bool = HAS_CUSTOM_OP) -> Tuple[Callable, Callable]:
    """``mmtransnext::<name>`` and ``mmtransnext::<name>_backward`` as ``torch.library`` custom ops with fake
    kernels and registered autograd (``torch.compile`` traces them); on torch < 2.4 (or ``custom_op=False``) an
    ``autograd.Function`` built from the same pieces. Returns the callables (forward with autograd, backward)."""
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
