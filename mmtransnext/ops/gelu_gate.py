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
from .backend import choose_backend
from .registration import register_op


def gelu_gate_reference(gate: Tensor, value: Tensor) -> Tensor:
    return F.gelu(gate) * value


# the kernels of mmtransnext::gelu_gate / _backward, defined in gelu_gate.cpp
def _forward(gate: Tensor, value: Tensor) -> Tensor:
    return ext_loader.ext.gelu_gate_forward(gate, value)


def _backward(grad: Tensor, gate: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
    return ext_loader.ext.gelu_gate_backward(grad, gate, value)


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad(ctx, grad):
    return _backward_apply(grad, *ctx.saved_tensors)


def _forward_fake(gate, value):
    return torch.empty_like(gate)


def _backward_fake(grad, gate, value):
    return torch.empty_like(gate), torch.empty_like(value)


_forward_apply, _backward_apply = register_op('gelu_gate',
                                              _forward,
                                              _backward,
                                              _forward_fake,
                                              _backward_fake,
                                              _save,
                                              _grad,
                                              in_extension=True)


def _fused(gate: Tensor, value: Tensor, attn_impl: str) -> bool:
    return (gate.dtype == value.dtype and gate.shape == value.shape
            and choose_backend('gelu_gate', attn_impl, gate.device, gate.dtype).backend == 'ext')


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
    return _backward_apply(grad, gate.contiguous(), value.contiguous())
