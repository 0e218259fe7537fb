"""``gelu(gate) * value``, the gate of ConvolutionalGLU, fused on the CPU.

Through PyTorch ops the gate is five passes over the (tokens x hidden) layer forward and nine in
backward, and ``gelu(gate)`` is kept for backward; the extension reads ``gate`` and ``value`` once
forward, once backward (recomputing the GELU), and keeps nothing extra. GELU is the exact (erf) one,
as ``nn.GELU()``, to about 2e-7 relative. GPUs, reduced precision and a build without the op use
PyTorch's ops.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ext_loader
from .ext_loader import resolve_attn_impl


def gelu_gate_reference(gate: Tensor, value: Tensor) -> Tensor:
    return F.gelu(gate) * value


def _forward(gate: Tensor, value: Tensor) -> Tensor:
    return ext_loader.ext.gelu_gate_forward(gate, value)


def _backward(grad: Tensor, gate: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
    grad_gate, grad_value = ext_loader.ext.gelu_gate_backward(grad.contiguous(), gate, value)
    return grad_gate, grad_value


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad(ctx, grad):
    return _backward_apply(grad, *ctx.saved_tensors)


if hasattr(torch.library, 'custom_op'):
    _forward_op = torch.library.custom_op('mmtransnext::gelu_gate', _forward, mutates_args=())
    _backward_op = torch.library.custom_op('mmtransnext::gelu_gate_backward', _backward, mutates_args=())

    @_forward_op.register_fake
    def _(gate, value):
        return torch.empty_like(gate)

    @_backward_op.register_fake
    def _(grad, gate, value):
        return torch.empty_like(gate), torch.empty_like(value)

    _forward_op.register_autograd(_grad, setup_context=_save)
    _forward_apply, _backward_apply = _forward_op, _backward_op
else:

    class _GeluGate(torch.autograd.Function):

        @staticmethod
        def forward(ctx, gate, value):
            ctx.save_for_backward(gate, value)
            return _forward(gate, value)

        @staticmethod
        def backward(ctx, grad):
            return _backward(grad, *ctx.saved_tensors)

    _forward_apply, _backward_apply = _GeluGate.apply, _backward


def _fused(gate: Tensor, value: Tensor, attn_impl: str) -> bool:
    return (resolve_attn_impl(attn_impl, gate.device) == 'ext' and gate.device.type == 'cpu'
            and gate.dtype == value.dtype and gate.dtype in (torch.float32, torch.float64)
            and gate.shape == value.shape)


def gelu_gate(gate: Tensor, value: Tensor, attn_impl: str = 'auto') -> Tensor:
    """``F.gelu(gate) * value``; the fused kernel for 'auto' / 'ext' on the CPU in float32 / float64.

    Args:
        gate, value (Tensor): same shape.
        attn_impl (str): the backbone's implementation choice: 'auto', 'ext' or 'pytorch'.
    """
    if not _fused(gate, value, attn_impl):
        return gelu_gate_reference(gate, value)
    return _forward_apply(gate.contiguous(), value.contiguous())


def gelu_gate_backward(grad: Tensor, gate: Tensor, value: Tensor, attn_impl: str = 'auto') -> Tuple[Tensor, Tensor]:
    """The gradients of :func:`gelu_gate` with respect to ``gate`` and ``value`` for an output gradient
    ``grad``, outside autograd (for callers that recompute the gate in their own backward)."""
    if not _fused(gate, value, attn_impl):
        return torch.ops.aten.gelu_backward(grad * value, gate), grad * F.gelu(gate)
    return _backward(grad, gate.contiguous(), value.contiguous())
