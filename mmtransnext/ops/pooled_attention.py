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
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import autotune, ext_loader
from .backend import Choice, autocast_dtype, choose_backend, in_traced_graph, planned_device_type
from .local_attention import local_window_stats
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


def _kernel_dtype(t: Tensor) -> torch.dtype:
    """The extension computes in float32 (float64 for float64)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _extension(like: Tensor):
    """The extension's kernels; for meta tensors (the memory count) what they allocate, :class:`_MetaExtension`."""
    return _MetaExtension if like.is_meta else ext_loader.ext


# The kernels of mmtransnext::pooled_attention / _backward (defined in pooled_attention.cpp). Query, key and value
# come in their own types (half / bfloat16 under autocast) and the op casts them for the kernels, inside: backward
# keeps the reduced copies, not float32 ones, casts them again and returns their gradients in their types.
def _forward(query: Tensor, key: Tensor, value: Tensor, bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor,
             local_logits: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor]:
    return _extension(query).pooled_attention_forward(query, key, value, bias_rows, cols_index, cols_weight,
                                                      local_logits, height, width)


def _backward(grad_out: Tensor, grad_local_weights: Tensor, grad_lse: Tensor, query: Tensor, key: Tensor, value: Tensor,
              bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor, out: Tensor, local_weights: Tensor,
              lse: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _extension(query).pooled_attention_backward(grad_out, grad_local_weights, grad_lse, query, key, value,
                                                       bias_rows, cols_index, cols_weight, out, local_weights, lse,
                                                       height, width)


class _MetaExtension:
    """What ``pooled_attention_forward`` / ``_backward`` of the extension allocate (``pooled_attention.cpp`` and the
    launcher of the planned device, ``backend.planning_for``), on meta tensors, in their order."""

    @staticmethod
    def pooled_attention_forward(query, key, value, bias_rows, cols_index, cols_weight, local_logits, height, width):
        dtype = _kernel_dtype(bias_rows)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        outputs = (query.new_empty(*query.shape[:3],
                                   value.shape[-1]), torch.empty_like(local_logits), query.new_empty(query.shape[:3]))
        if planned_device_type() == 'cpu':
            _cpu_workspaces(query, key, value, bias_rows, backward=False)
        return outputs

    @staticmethod
    def pooled_attention_backward(grad_out, grad_local_weights, grad_lse, query_in, key_in, value_in, bias_rows,
                                  cols_index, cols_weight, out, local_weights, lse, height, width):
        dtype = _kernel_dtype(bias_rows)
        query, key, value = query_in.to(dtype), key_in.to(dtype), value_in.to(dtype)
        grads = _grads_like(query, key, value, bias_rows, local_weights)
        if planned_device_type() == 'cpu':
            _cpu_workspaces(query, key, value, bias_rows, backward=True)
        else:
            torch.empty_like(lse)  # the CUDA launcher's per-query shift
        return (grads[0].to(query_in.dtype), grads[1].to(key_in.dtype), grads[2].to(value_in.dtype), *grads[3:])


def _cpu_workspaces(query, key, value, bias_rows, backward):
    """What ``pooled_attention_cpu.cpp`` allocates beside the outputs, in its order, alive together: keys and values
    in its kernels' order (transposed too for head size 24 in float32), the bias rows transposed and padded, and in
    backward their gradients in those layouts."""
    tiled = query.dtype == torch.float32 and query.shape[-1] == value.shape[-1] == 24
    heads, H, ph, U = bias_rows.shape
    layouts = [torch.empty_like(key), torch.empty_like(value)]
    layouts += ([torch.empty_like(key)] + ([torch.empty_like(value)] if backward else [])) if tiled else []
    layouts.append(bias_rows.new_empty(heads, H, U, -(-ph // 16) * 16))
    if backward:
        layouts += [torch.empty_like(key), torch.empty_like(value), torch.empty_like(layouts[-1])]
    return layouts


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
    grad_query, grad_key, grad_value, grad_rows, grad_local = _backward_apply(*grads, query, key, value, bias_rows,
                                                                              cols_index, cols_weight, out,
                                                                              local_weights, lse, *ctx.size)
    return grad_query, grad_key, grad_value, grad_rows, None, None, grad_local, None, None


def _forward_fake(query, key, value, bias_rows, cols_index, cols_weight, local_logits, height, width):
    dtype = _kernel_dtype(bias_rows)
    return (query.new_empty(*query.shape[:3], value.shape[-1],
                            dtype=dtype), torch.empty_like(local_logits), query.new_empty(query.shape[:3], dtype=dtype))


def _grads_like(query, key, value, bias_rows, local_weights):
    """The backward's outputs, whichever backend: the gradients of query, key, value, the bias rows and the local
    logits (shaped as the local weights)."""
    return (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), torch.empty_like(bias_rows),
            torch.empty_like(local_weights))


def _backward_fake(grad_out, grad_local_weights, grad_lse, query, key, value, bias_rows, cols_index, cols_weight, out,
                   local_weights, lse, height, width):
    return _grads_like(query, key, value, bias_rows, local_weights)


_forward_apply, _backward_apply = register_op('pooled_attention',
                                              _forward,
                                              _backward,
                                              _forward_fake,
                                              _backward_fake,
                                              _save,
                                              _grad,
                                              runs_on_meta=True,
                                              in_extension=True)

# ----------------------------------------------------------------------------- Triton


def invert_cols_taps(cols_index: Tensor, cols_weight: Tensor, table_cols: int) -> Tuple[Tensor, Tensor]:
    """For each column u of the bias table, the (x * pw + kx) positions that read it and their tap weights,
    padded with weight 0 to the longest list: (U, E) int32 and float32.

    The Triton backward gathers these for each u instead of scattering into u (which would need atomics); a pure
    function of the geometry, so the backbone computes it once per input size (``BiasTaps``).
    """
    taps, W, pw = cols_index.shape
    flat, weights = cols_index.reshape(-1), cols_weight.reshape(-1).float()
    used = (weights != 0).nonzero().squeeze(1)
    flat, weights = flat[used], weights[used]
    order = torch.argsort(flat, stable=True)
    column = flat[order]
    counts = torch.bincount(column, minlength=table_cols)
    slot = torch.arange(column.numel(), device=column.device) - (counts.cumsum(0) - counts)[column]
    index = torch.zeros(table_cols, max(int(counts.max()), 1), dtype=torch.int32, device=cols_index.device)
    weight = torch.zeros(index.shape, dtype=torch.float32, device=cols_index.device)
    index[column, slot] = (used[order] % (W * pw)).to(torch.int32)
    weight[column, slot] = weights[order]
    return index, weight


def _kernels():
    from .triton_kernels import pooled_attention
    return pooled_attention


def _triton_forward(query: Tensor, key: Tensor, value: Tensor, bias_rows: Tensor, cols_index: Tensor,
                    cols_weight: Tensor, local_logits: Tensor, inverse_index: Optional[Tensor],
                    inverse_weight: Optional[Tensor], precision: str) -> Tuple[Tensor, Tensor, Tensor]:
    return _kernels().pooled_forward(query, key, value, bias_rows, cols_index, cols_weight, local_logits, precision)


def _triton_backward(grad_out: Tensor, grad_local_weights: Tensor, grad_lse: Tensor, query: Tensor, key: Tensor,
                     value: Tensor, bias_rows: Tensor, cols_index: Tensor, cols_weight: Tensor,
                     inverse_index: Optional[Tensor], inverse_weight: Optional[Tensor], out: Tensor,
                     local_weights: Tensor, lse: Tensor,
                     precision: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if inverse_index is None:  # a traced geometry has none (data-dependent): found here, where the op runs
        inverse_index, inverse_weight = invert_cols_taps(cols_index, cols_weight, bias_rows.shape[-1])
    # d softmax: every logit's gradient is p * (its upstream gradient - delta), one delta per query
    delta = ((grad_out.float() * out.float()).sum(-1) + (grad_local_weights * local_weights).sum(-1) - grad_lse)
    grad_local = local_weights * (grad_local_weights - delta.unsqueeze(-1))
    grad_query, grad_key, grad_value, grad_rows = _kernels().pooled_backward(
        grad_out.to(query.dtype).contiguous(), delta.contiguous(), query, key, value, bias_rows, cols_index,
        cols_weight, inverse_index, inverse_weight, lse, precision)
    return grad_query, grad_key, grad_value, grad_rows, grad_local


def _triton_save(ctx, inputs, output):
    *tensors, precision = inputs
    ctx.save_for_backward(*tensors[:6], *tensors[7:], *output)
    ctx.precision = precision


def _triton_grad(ctx, grad_out, grad_local_weights, grad_lse):
    saved = ctx.saved_tensors
    grads = _materialise((grad_out, grad_local_weights, grad_lse), saved[-3:])
    grad_query, grad_key, grad_value, grad_rows, grad_local = _triton_backward_apply(*grads, *saved, ctx.precision)
    return grad_query, grad_key, grad_value, grad_rows, None, None, grad_local, None, None, None


def _triton_forward_fake(query, key, value, bias_rows, cols_index, cols_weight, local_logits, inverse_index,
                         inverse_weight, precision):
    return (query.new_empty(*query.shape[:3], value.shape[-1]), torch.empty_like(local_logits),
            query.new_empty(query.shape[:3], dtype=torch.float32))


def _triton_backward_fake(grad_out, grad_local_weights, grad_lse, query, key, value, bias_rows, cols_index, cols_weight,
                          inverse_index, inverse_weight, out, local_weights, lse, precision):
    return _grads_like(query, key, value, bias_rows, local_weights)


_triton_forward_apply, _triton_backward_apply = register_op('triton_pooled_attention',
                                                            _triton_forward,
                                                            _triton_backward,
                                                            _triton_forward_fake,
                                                            _triton_backward_fake,
                                                            _triton_save,
                                                            _triton_grad,
                                                            runs_on_meta=True)


def _triton_pooled_attention(query, key, value, bias_rows, cols_index, cols_weight, local_logits, cols_inverse,
                             out_dtype):
    # products in the type torch's matmuls take under autocast (the reference path's q @ k^T and p @ v do), else
    # half / bfloat16 inputs in their type, accumulated in float32; the bias and the softmax are float32
    dtype = autocast_dtype(query.device)  # a meta tensor's: the planned device's (the memory count)
    if dtype is None:
        dtype = out_dtype if out_dtype in (torch.float16, torch.bfloat16) else torch.float32
    precision = _kernels().dot_precision(dtype, query.device)
    f32 = [t.to(torch.float32).contiguous() for t in (bias_rows, cols_weight, local_logits)]
    # the backward's inverse of the column taps: given with the geometry, else found by the op's backward
    inverse = (None, None) if cols_inverse is None else (cols_inverse[0].contiguous(),
                                                         cols_inverse[1].to(torch.float32).contiguous())
    # int32 column indices: the kernels' bias gather holds a tile of them in registers
    out, local_weights, _ = _triton_forward_apply(
        query.to(dtype).contiguous(),
        key.to(dtype).contiguous(),
        value.to(dtype).contiguous(), f32[0],
        cols_index.to(torch.int32).contiguous(), f32[1], f32[2], *inverse, precision)
    return out.to(out_dtype), local_weights.to(local_logits.dtype)


# ----------------------------------------------------------------------------- public face


def pooled_attention_backend(query: Tensor, value: Tensor, local_len: int, pool_size: Tuple[int, int],
                             size: Tuple[int, int], taps: int, attn_impl: str) -> Choice:
    """The backend :func:`pooled_attention` runs on for these shapes (the layers ask before they call it). Under
    'auto' it is decided per head size, local and pooled key count and bias mode, not per image size (the full
    attention's keys are the map itself: one decision for every size)."""
    out_dtype = torch.promote_types(query.dtype, value.dtype)
    if in_traced_graph():  # the static table (backend.py); the sizes may be symbolic
        return choose_backend('pooled_attention', attn_impl, query.device, out_dtype, torch.is_grad_enabled())
    batch, heads, _, head_dim = query.shape
    full = tuple(pool_size) == tuple(size)
    pool = 'the map' if full else f'{pool_size[0]}x{pool_size[1]}'
    config = (f'head {head_dim}/{value.shape[-1]}, local {local_len}, pool {pool}, '
              f'bias {"gather" if taps == 1 else "resized"}')
    shape = (batch, heads, *size, head_dim, value.shape[-1], local_len, *((0, 0) if full else pool_size), taps)
    return choose_backend('pooled_attention', attn_impl, query.device, out_dtype, torch.is_grad_enabled(),
                          autotune.Workload(config, shape))


def _problem(shape, device, generator) -> autotune.Problem:
    """The op on random inputs like a block's (``autotune``): cosine logits, a position bias read through random
    column taps, masked local logits."""
    batch, heads, height, width, head_dim, value_dim, local_len, ph, pw, taps = shape
    ph, pw = (ph, pw) if ph else (height, width)
    table_cols = width + pw
    del device  # made on the CPU, moved by autotune

    def randn(*size):
        return torch.randn(size, generator=generator)

    cols_index = torch.randint(0, table_cols, (taps, width, pw), generator=generator)
    cols_weight = torch.rand((taps, width, pw), generator=generator) + 0.1
    cols_weight = cols_weight / cols_weight.sum(0)
    local_logits = randn(batch, heads, height * width, local_len)
    if local_len:
        outside = local_window_stats((height, width), round(local_len**0.5))[1]
        local_logits = local_logits.masked_fill(outside, float('-inf'))
    inverse_index, inverse_weight = invert_cols_taps(cols_index, cols_weight, table_cols)
    inputs = {
        'query': F.normalize(randn(batch, heads, height * width, head_dim), dim=-1) * 4,
        'key': F.normalize(randn(batch, heads, ph * pw, head_dim), dim=-1),
        'value': randn(batch, heads, ph * pw, value_dim),
        'bias_rows': randn(heads, height, ph, table_cols) * 0.5,
        'local_logits': local_logits,
        'cols_index': cols_index,
        'cols_weight': cols_weight,
        'inverse_index': inverse_index,
        'inverse_weight': inverse_weight,
    }

    def run(backend: str, t):
        return pooled_attention(t['query'], t['key'], t['value'], t['bias_rows'], t['cols_index'], t['cols_weight'],
                                t['local_logits'], (height, width), backend, (t['inverse_index'], t['inverse_weight']))

    # the key and value gradients sum over every query of the map
    return autotune.Problem(inputs, ('query', 'key', 'value', 'bias_rows', 'local_logits'),
                            run, ('out', 'local_weights'),
                            summed=max(height * width, ph * pw + local_len))


def pooled_attention(query: Tensor,
                     key: Tensor,
                     value: Tensor,
                     bias_rows: Tensor,
                     cols_index: Tensor,
                     cols_weight: Tensor,
                     local_logits: Tensor,
                     size: Tuple[int, int],
                     attn_impl: str = 'auto',
                     cols_inverse: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
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
        attn_impl (str): 'auto', 'ext', 'triton' or 'pytorch' (materialises every logit); see
            ``mmtransnext.ops.backend``.
        cols_inverse (tuple[Tensor], optional): :func:`invert_cols_taps` of the column taps, for the Triton
            backward (computed by the op's backward when not given).

    Returns:
        tuple[Tensor, Tensor]: the pooled output (B, heads, H * W, Dv) and the local softmax
        weights (B, heads, H * W, L).
    """
    out_dtype = torch.promote_types(query.dtype, value.dtype)
    backend = pooled_attention_backend(query, value, local_logits.shape[-1], (bias_rows.shape[2], cols_index.shape[2]),
                                       size, cols_index.shape[0], attn_impl).backend
    if backend == 'pytorch':
        out, local_weights, _ = pooled_attention_reference(query, key, value, bias_rows, cols_index, cols_weight,
                                                           local_logits)
        return out, local_weights
    if backend == 'triton':
        return _triton_pooled_attention(query, key, value, bias_rows, cols_index, cols_weight, local_logits,
                                        cols_inverse, out_dtype)
    # float32 for the softmax under autocast too (query / key / value are cast inside the op); the outputs go back in
    # the inputs' type
    dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    out, local_weights, _ = _forward_apply(query.contiguous(), key.contiguous(), value.contiguous(),
                                           bias_rows.to(dtype).contiguous(), cols_index.contiguous(),
                                           cols_weight.to(dtype).contiguous(),
                                           local_logits.to(dtype).contiguous(), *size)
    return out.to(out_dtype), local_weights.to(local_logits.dtype)


autotune.register_problem('pooled_attention', _problem)
