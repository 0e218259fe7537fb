"""The continuous position-bias MLP ``fc2(relu(fc1(coords)))``, fused on the CPU.

In every attention block the MLP runs on all distinct relative offsets (tens of thousands) through
a 512-wide hidden layer; with ``nn.Linear`` that (T, 512) activation is written, re-read and kept
for backward, which made it the largest cost of a CPU training step. The extension keeps each
row's hidden layer in registers and recomputes it in backward. GPUs keep ``nn.Linear``
(``backend.OP_SUPPORT``).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ext_loader
from .backend import choose_backend
from .registration import register_op


def position_bias_mlp_reference(coords: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """(T, 2) coordinates -> (heads, T) bias values: ``fc2(relu(fc1(coords)))`` (the official arithmetic)."""
    return F.linear(torch.relu(F.linear(coords, w1, b1)), w2, b2).transpose(0, 1)


def _forward(coords: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    return ext_loader.ext.position_bias_mlp_forward(coords, w1, b1, w2, b2)


def _backward(grad: Tensor, coords: Tensor, w1: Tensor, b1: Tensor,
              w2: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_w1, grad_b1, grad_w2, grad_b2 = ext_loader.ext.position_bias_mlp_backward(grad.contiguous(), coords, w1, b1,
                                                                                   w2)
    return grad_w1, grad_b1, grad_w2, grad_b2


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])


def _grad(ctx, grad):
    return (None, *_backward_apply(grad, *ctx.saved_tensors))


def _forward_fake(coords, w1, b1, w2, b2):
    return coords.new_empty(w2.shape[0], coords.shape[0])


def _backward_fake(grad, coords, w1, b1, w2):
    return torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2), w2.new_empty(w2.shape[0])


_forward_apply, _backward_apply = register_op('position_bias_mlp', _forward, _backward, _forward_fake, _backward_fake,
                                              _save, _grad)


def position_bias_mlp(coords: Tensor,
                      w1: Tensor,
                      b1: Tensor,
                      w2: Tensor,
                      b2: Tensor,
                      attn_impl: str = 'auto') -> Tensor:
    """(T, 2) coordinates -> (heads, T) bias values of the MLP with weights (w1, b1, w2, b2); the fused kernel
    for 'auto' / 'ext' on the CPU in float32 / float64 (the weights' dtype: also under autocast, as the bias
    feeds a softmax), the reference otherwise."""
    if choose_backend('position_bias_mlp', attn_impl, coords.device, w2.dtype).backend != 'ext':
        return position_bias_mlp_reference(coords, w1, b1, w2, b2)
    dtype = w2.dtype
    return _forward_apply(
        coords.to(dtype).contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous(), b2.contiguous())
