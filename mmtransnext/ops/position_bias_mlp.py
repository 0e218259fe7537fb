"""The continuous position-bias MLP ``fc2(relu(fc1(coords)))``, fused on the CPU.

In every attention block the MLP runs on all distinct relative offsets (tens of thousands) through
a 512-wide hidden layer; with ``nn.Linear`` that (T, 512) activation is written, re-read and kept
for backward, which made it the largest cost of a CPU training step. The extension keeps each
row's hidden layer in registers and recomputes it in backward. Elsewhere (GPUs), where the attention runs a kernel
backend (``memory_lean``), PyTorch's products compute it and backward recomputes the hidden layer instead of keeping
it: about 1 GiB of a TransNeXt-T step at 800 x 1216 on a GPU.
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


# the kernels of mmtransnext::position_bias_mlp / _backward, defined in position_bias_mlp.cpp
def _forward(coords: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    return ext_loader.ext.position_bias_mlp_forward(coords, w1, b1, w2, b2)


def _backward(grad: Tensor, coords: Tensor, w1: Tensor, b1: Tensor,
              w2: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return ext_loader.ext.position_bias_mlp_backward(grad, coords, w1, b1, w2)


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])


def _grad(ctx, grad):
    return (None, *_backward_apply(grad, *ctx.saved_tensors))


def _forward_fake(coords, w1, b1, w2, b2):
    return coords.new_empty(w2.shape[0], coords.shape[0])


def _backward_fake(grad, coords, w1, b1, w2):
    return torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2), w2.new_empty(w2.shape[0])


class _RecomputedHidden(torch.autograd.Function):
    """:func:`position_bias_mlp_reference` (the same operations forward) keeping its inputs, not its (T, 512)
    hidden layer: backward recomputes it. Under autocast the products ran in the type of the first layer's output;
    backward runs in that type too and casts the weights' gradients back, as autograd would."""

    @staticmethod
    def forward(ctx, coords, w1, b1, w2, b2):
        out = position_bias_mlp_reference(coords, w1, b1, w2, b2)
        ctx.save_for_backward(coords, w1, b1, w2)
        ctx.dtype = out.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        coords, w1, b1, w2 = ctx.saved_tensors
        dtype = ctx.dtype
        hidden = torch.relu(F.linear(coords.to(dtype), w1.to(dtype), b1.to(dtype)))  # (T, 512)
        grad_rows = grad.to(dtype).t()  # (T, heads)
        grad_w2 = grad_rows.t() @ hidden
        grad_hidden = torch.ops.aten.threshold_backward(grad_rows @ w2.to(dtype), hidden, 0)
        del hidden
        grad_w1 = grad_hidden.t() @ coords.to(dtype)
        return (None, grad_w1.to(w1.dtype), grad_hidden.sum(0).to(b1.dtype), grad_w2.to(w2.dtype),
                grad_rows.sum(0).to(w2.dtype))


_forward_apply, _backward_apply = register_op('position_bias_mlp',
                                              _forward,
                                              _backward,
                                              _forward_fake,
                                              _backward_fake,
                                              _save,
                                              _grad,
                                              in_extension=True)


def position_bias_mlp(coords: Tensor,
                      w1: Tensor,
                      b1: Tensor,
                      w2: Tensor,
                      b2: Tensor,
                      attn_impl: str = 'auto') -> Tensor:
    """(T, 2) coordinates -> (heads, T) bias values of the MLP with weights (w1, b1, w2, b2); the fused kernel
    for 'auto' / 'ext' on the CPU in float32 / float64 (the weights' dtype: also under autocast, as the bias
    feeds a softmax); in training with a kernel backend elsewhere, the reference's operations with the hidden layer
    recomputed in backward; the reference otherwise."""
    if choose_backend('position_bias_mlp', attn_impl, coords.device, w2.dtype).backend != 'ext':
        if torch.is_grad_enabled() and choose_backend('memory_lean', attn_impl, coords.device).backend != 'pytorch':
            return _RecomputedHidden.apply(coords, w1, b1, w2, b2)
        return position_bias_mlp_reference(coords, w1, b1, w2, b2)
    dtype = w2.dtype
    return _forward_apply(
        coords.to(dtype).contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous(), b2.contiguous())
