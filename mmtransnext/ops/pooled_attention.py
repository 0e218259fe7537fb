"""Pooled-key attention merged with the local logits under one softmax (split softmax).

Aggregated attention gives every query one softmax over its ``L`` local logits and ``P`` pooled
logits ``query . key_p + bias[query, p]``. Written out, that is (B, heads, N, L + P) logits, the
(heads, N, P) position bias and their gradients: gigabytes per block at detection sizes. This op
computes the same softmax a block of queries at a time and keeps only the log-sum-exp per query;
backward recomputes each block's logits (flash-attention style).

The position bias is read from per-row tables, never as a (heads, N, P) tensor::

    bias[h, (y, x), (ky, kx)] = sum_t cols_weight[t, x, kx] * bias_rows[h, y, ky, cols_index[t, x, kx]]

``bias_rows`` (heads, H, ph, U) is the bias already resolved along H (small); the taps resolve W:
one tap of weight 1 is a pure gather, more taps carry bilinear resizing (interpolation mode).

Returns ``out`` = sum_p a_p value_p (B, heads, N, Dv), the local weights a_l (B, heads, N, L) and
the log-sum-exp (B, heads, N). With L = 0 it is plain attention with a position bias (stage 4).
"""
from typing import Tuple

import torch
from torch import Tensor

from . import ext_loader
from .ext_loader import resolve_attn_impl
from .registration import register_op


def expand_position_bias(bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor) -> Tensor:
    """The (heads, H * W, ph * pw) position bias that the op reads from the per-row tables."""
    heads, H, ph, _ = bias_rows.shape
    _, W, pw = cols_index.shape
    taps = bias_rows[:, :, :, cols_index]  # (heads, H, ph, T, W, pw)
    bias = (taps * cols_weight.to(bias_rows.dtype)).sum(3)  # (heads, H, ph, W, pw)
    return bias.permute(0, 1, 3, 2, 4).reshape(heads, H * W, ph * pw)


def pooled_attention_reference(query: Tensor, key: Tensor, value: Tensor, bias_rows: Tensor, cols_index: Tensor,
                               cols_weight: Tensor, local_logits: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The same result with every logit materialised (the official arithmetic: cat, softmax, split)."""
    pooled_logits = query @ key.transpose(-2, -1) + expand_position_bias(bias_rows, cols_index, cols_weight)
    logits = torch.cat([local_logits.to(pooled_logits.dtype), pooled_logits], dim=-1)
    attn = logits.softmax(dim=-1)
    local_weights, pooled_weights = attn.split([local_logits.shape[-1], key.shape[2]], dim=-1)
    return pooled_weights @ value, local_weights, torch.logsumexp(logits, dim=-1)


# ----------------------------------------------------------------------------- extension

def _forward(query: Tensor, key: Tensor, value: Tensor, bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor,
             local_logits: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor]:
    out, local_weights, lse = ext_loader.ext.pooled_attention_forward(query, key, value, bias_rows, cols_index,
                                                                       cols_weight, local_logits, height, width)
    return out, local_weights, lse


def _backward(grad_out: Tensor, grad_local_weights: Tensor, grad_lse: Tensor, query: Tensor, key: Tensor,
              value: Tensor, bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor, out: Tensor,
              local_weights: Tensor, lse: Tensor, height: int, width: int
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = ext_loader.ext.pooled_attention_backward(grad_out, grad_local_weights, grad_lse, query, key, value,
                                                     bias_rows, cols_index, cols_weight, out, local_weights, lse,
                                                     height, width)
    return tuple(grads)


def _save(ctx, inputs, output):
    query, key, value, bias_rows, cols_index, cols_weight, _, height, width = inputs
    ctx.save_for_backward(query, key, value, bias_rows, cols_index, cols_weight, *output)
    ctx.size = (height, width)


def _materialise(grads, outputs):
    """Autograd hands None for outputs that did not reach the loss; the kernel wants zeros."""
    return [torch.zeros_like(o) if g is None else g.contiguous() for g, o in zip(grads, outputs)]


def _grad(ctx, grad_out, grad_local_weights, grad_lse):
    query, key, value, bias_rows, cols_index, cols_weight, out, local_weights, lse = ctx.saved_tensors
    grads = _materialise((grad_out, grad_local_weights, grad_lse), (out, local_weights, lse))
    grad_query, grad_key, grad_value, grad_rows, grad_local = _backward_apply(
        *grads, query, key, value, bias_rows, cols_index, cols_weight, out, local_weights, lse, *ctx.size)
    return grad_query, grad_key, grad_value, grad_rows, None, None, grad_local, None, None


def _forward_fake(query, key, value, bias_rows, cols_index, cols_weight, local_logits, height, width):
    return (query.new_empty(*query.shape[:3], value.shape[-1]), torch.empty_like(local_logits),
            query.new_empty(query.shape[:3]))


def _backward_fake(grad_out, grad_local_weights, grad_lse, query, key, value, bias_rows, cols_index, cols_weight, out,
                   local_weights, lse, height, width):
    return (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), torch.empty_like(bias_rows),
            torch.empty_like(local_weights))


_forward_apply, _backward_apply = register_op('pooled_attention', _forward, _backward, _forward_fake, _backward_fake,
                                              _save, _grad)


# ----------------------------------------------------------------------------- public face

def pooled_attention(query: Tensor, key: Tensor, value: Tensor, bias_rows: Tensor, cols_index: Tensor,
                     cols_weight: Tensor, local_logits: Tensor, size: Tuple[int, int],
                     attn_impl: str = 'auto') -> Tuple[Tensor, Tensor]:
    """One softmax over each query's local logits and its pooled-key logits.

    Args:
        query (Tensor): (B, heads, H * W, D), already scaled.
        key (Tensor): (B, heads, P, D) pooled keys, P = ph * pw.
        value (Tensor): (B, heads, P, Dv) pooled values.
        bias_rows (Tensor): (heads, H, ph, U) position bias resolved along H.
        cols_index (Tensor): (taps, W, pw) int64 indices into U.
        cols_weight (Tensor): (taps, W, pw) weights of the taps.
        local_logits (Tensor): (B, heads, H * W, L) logits of the local keys (L may be 0), ``-inf``
            where a neighbour is outside the map.
        size (tuple[int]): (H, W) of the query grid.
        attn_impl (str): 'auto' (the extension where built), 'ext' or 'pytorch' (materialises
            every logit).

    Returns:
        tuple[Tensor, Tensor]: the pooled output (B, heads, H * W, Dv) and the local softmax
        weights (B, heads, H * W, L).
    """
    if resolve_attn_impl(attn_impl, query.device) == 'pytorch':
        out, local_weights, _ = pooled_attention_reference(query, key, value, bias_rows, cols_index, cols_weight,
                                                           local_logits)
        return out, local_weights
    # float32 for the softmax under autocast too; the outputs go back in the inputs' type
    out_dtype = torch.promote_types(query.dtype, value.dtype)
    dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    out, local_weights, _ = _forward_apply(query.to(dtype).contiguous(), key.to(dtype).contiguous(),
                                           value.to(dtype).contiguous(), bias_rows.to(dtype).contiguous(),
                                           cols_index.contiguous(), cols_weight.to(dtype).contiguous(),
                                           local_logits.to(dtype).contiguous(), *size)
    return out.to(out_dtype), local_weights.to(local_logits.dtype)
