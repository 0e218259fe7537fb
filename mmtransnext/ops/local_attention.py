"""The local part of aggregated attention: each pixel's ``window_size`` x ``window_size`` neighbourhood.

Two operations, each with a pure-PyTorch reference (``F.unfold``, exactly the official model's
arithmetic), the C++/CUDA extension ``mmtransnext._ext`` and Triton kernels (``triton_kernels``):

* ``local_similarity``: ``query . key[neighbour] + bias[head, neighbour]``, ``-inf`` for neighbours
  outside the feature map -> (B, heads, N, window_size**2);
* ``local_aggregation``: ``sum_l weights[l] * value[neighbour l]`` (zero outside) -> (B, heads, N, D).

Query / key / value are (B, heads, N, D) with N = H * W. Both kernel backends are registered with
``torch.library`` (``mmtransnext::local_similarity``, defined in C++ by the extension,
``mmtransnext::triton_local_similarity`` ...), so ``torch.compile`` and ``torch.export`` trace through them.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import autotune, ext_loader
from .backend import autocast_dtype, choose_backend
from .registration import HAS_CUSTOM_OP, register_op


def local_window_stats(size: Tuple[int, int], window_size: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Number of in-image neighbours of each pixel and the mask of out-of-image ones.

    Returns:
        tuple[Tensor, Tensor]: ``local_len`` (N, 1) float and ``padding_mask`` (N, window_size**2)
        bool, True where the neighbour falls outside the feature map.
    """
    H, W = size
    r = window_size // 2
    offsets = torch.arange(-r, r + 1, device=device)
    inside_h = ((torch.arange(H, device=device)[:, None] + offsets) >= 0) & (
        (torch.arange(H, device=device)[:, None] + offsets) < H)  # (H, k)
    inside_w = ((torch.arange(W, device=device)[:, None] + offsets) >= 0) & (
        (torch.arange(W, device=device)[:, None] + offsets) < W)  # (W, k)
    inside = (inside_h[:, None, :, None] & inside_w[None, :, None, :]).reshape(H * W, -1)
    local_len = inside.sum(-1, keepdim=True).to(torch.float32)
    return local_len, ~inside


# ----------------------------------------------------------------------------- reference (PyTorch)


def _unfold_windows(pixels: Tensor, height: int, width: int, window_size: int) -> Tensor:
    """(B, heads, N, D) -> each pixel's window (B, heads, N, D, L), zero outside the map."""
    B, heads, N, D = pixels.shape
    windows = F.unfold(pixels.transpose(-1, -2).reshape(B, heads * D, height, width),
                       window_size,
                       padding=window_size // 2)
    return windows.reshape(B, heads, D, window_size**2, N).permute(0, 1, 4, 2, 3)


def local_similarity_reference(query: Tensor,
                               key: Tensor,
                               bias: Tensor,
                               height: int,
                               width: int,
                               window_size: int,
                               padding_mask: Optional[Tensor] = None) -> Tensor:
    if padding_mask is None:
        padding_mask = local_window_stats((height, width), window_size, query.device)[1]
    attn = (query.unsqueeze(-2) @ _unfold_windows(key, height, width, window_size)).squeeze(-2)
    return (attn + bias.unsqueeze(1)).masked_fill(padding_mask, float('-inf'))


def local_aggregation_reference(weights: Tensor, value: Tensor, height: int, width: int, window_size: int) -> Tensor:
    windows = _unfold_windows(value, height, width, window_size)
    return (weights.unsqueeze(-2) @ windows.transpose(-2, -1)).squeeze(-2)


# ----------------------------------------------------------------------------- extension
# the kernels of mmtransnext::local_similarity / local_aggregation (+ _backward), defined in local_attention.cpp


def _similarity_forward(query: Tensor, key: Tensor, bias: Tensor, height: int, width: int, window_size: int) -> Tensor:
    return ext_loader.ext.local_similarity_forward(query, key, bias, height, width, window_size)


def _similarity_backward(grad: Tensor, query: Tensor, key: Tensor, height: int, width: int,
                         window_size: int) -> Tuple[Tensor, Tensor, Tensor]:
    return ext_loader.ext.local_similarity_backward(grad, query, key, height, width, window_size)


def _aggregation_forward(weights: Tensor, value: Tensor, height: int, width: int, window_size: int) -> Tensor:
    return ext_loader.ext.local_aggregation_forward(weights, value, height, width, window_size)


def _aggregation_backward(grad: Tensor, weights: Tensor, value: Tensor, height: int, width: int,
                          window_size: int) -> Tuple[Tensor, Tensor]:
    return ext_loader.ext.local_aggregation_backward(grad, weights, value, height, width, window_size)


# ----------------------------------------------------------------------------- Triton


def _kernels():
    from .triton_kernels import local_attention
    return local_attention


def _triton_similarity_forward(query: Tensor, key: Tensor, bias: Tensor, height: int, width: int,
                               window_size: int) -> Tensor:
    return _kernels().window_dot(query, key, bias, height, width, window_size, float('-inf'))


def _triton_similarity_backward(grad: Tensor, query: Tensor, key: Tensor, height: int, width: int,
                                window_size: int) -> Tuple[Tensor, Tensor, Tensor]:
    kernels, grad = _kernels(), grad.contiguous()
    grad_query = kernels.window_sum(grad, key, height, width, window_size)
    grad_key = kernels.window_sum(grad, query, height, width, window_size, transposed=True)
    outside = local_window_stats((height, width), window_size, grad.device)[1]
    return grad_query, grad_key, grad.masked_fill(outside, 0).sum((0, 2))


def _triton_aggregation_forward(weights: Tensor, value: Tensor, height: int, width: int, window_size: int) -> Tensor:
    return _kernels().window_sum(weights, value, height, width, window_size)


def _triton_aggregation_backward(grad: Tensor, weights: Tensor, value: Tensor, height: int, width: int,
                                 window_size: int) -> Tuple[Tensor, Tensor]:
    kernels, grad = _kernels(), grad.contiguous()
    grad_weights = kernels.window_dot(grad, value, None, height, width, window_size, 0.)
    return grad_weights, kernels.window_sum(weights, grad, height, width, window_size, transposed=True)


# ----------------------------------------------------------------------------- registration (both backends)


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:2])
    ctx.window = inputs[-3:]


def _similarity_fake(query, key, bias, height, width, window_size):
    return query.new_empty(*query.shape[:3], window_size**2)


def _similarity_backward_fake(grad, query, key, height, width, window_size):
    return torch.empty_like(query), torch.empty_like(key), query.new_empty(query.shape[1], window_size**2)


def _aggregation_fake(weights, value, height, width, window_size):
    return torch.empty_like(value)


def _aggregation_backward_fake(grad, weights, value, height, width, window_size):
    return torch.empty_like(weights), torch.empty_like(value)


def _register(name: str,
              forward,
              backward,
              forward_fake,
              backward_fake,
              custom_op: bool = HAS_CUSTOM_OP,
              runs_on_meta: bool = False,
              in_extension: bool = False):
    """``mmtransnext::<name>`` with autograd: the gradients of the two saved inputs from ``backward``."""

    def grad(ctx, grad_out):
        return (*backward_apply(grad_out, *ctx.saved_tensors, *ctx.window), None, None, None)

    forward_apply, backward_apply = register_op(name, forward, backward, forward_fake, backward_fake, _save, grad,
                                                custom_op, runs_on_meta, in_extension)
    return forward_apply


def _register_backends(name: str, ext, triton, forward_fake, backward_fake):
    """``{backend: op}`` for the two kernel backends: ``mmtransnext::<name>`` of the extension (defined in C++) and
    ``mmtransnext::triton_<name>`` of Triton, each from its (forward, backward) pair; both compute the same shapes,
    so they share the fake functions (the Triton launchers also run on meta tensors, allocating without launching)."""
    return {
        'ext': _register(name, *ext, forward_fake, backward_fake, in_extension=True),
        'triton': _register(f'triton_{name}', *triton, forward_fake, backward_fake, runs_on_meta=True),
    }


_SIMILARITY = _register_backends('local_similarity',
                                 ext=(_similarity_forward, _similarity_backward),
                                 triton=(_triton_similarity_forward, _triton_similarity_backward),
                                 forward_fake=_similarity_fake,
                                 backward_fake=_similarity_backward_fake)
_AGGREGATION = _register_backends('local_aggregation',
                                  ext=(_aggregation_forward, _aggregation_backward),
                                  triton=(_triton_aggregation_forward, _triton_aggregation_backward),
                                  forward_fake=_aggregation_fake,
                                  backward_fake=_aggregation_backward_fake)

# ----------------------------------------------------------------------------- public face


def _kernel_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    """One dtype for the kernel; autograd casts the gradients back to each input's. Under autocast, the one it
    multiplies in (the reference's matmuls run in it), so that its reduced copies are what backward keeps; else the
    promoted type of the inputs (autocast may hand over a mix)."""
    promoted = torch.promote_types(a.dtype, b.dtype)
    reduced = autocast_dtype(a.device)
    return reduced if reduced is not None and promoted != torch.float64 else promoted


def _workload(like: Tensor, size: Tuple[int, int], window_size: int) -> autotune.Workload:
    """What 'auto' decides for: the head size and window (not the image size); measured at ``like``'s shapes."""
    batch, heads, _, head_dim = like.shape
    return autotune.Workload(f'head {head_dim}, window {window_size}', (batch, heads, *size, window_size, head_dim))


def _problem(shape, device, generator) -> autotune.Problem:
    """Both local ops as a block runs them, on random inputs (``autotune``): similarity, softmax, aggregation."""
    batch, heads, height, width, window_size, head_dim = shape
    del device  # made on the CPU, moved by autotune

    def randn(*size):
        return torch.randn(size, generator=generator)

    inputs = {
        'query': F.normalize(randn(batch, heads, height * width, head_dim), dim=-1) * 4,
        'key': F.normalize(randn(batch, heads, height * width, head_dim), dim=-1),
        'value': randn(batch, heads, height * width, head_dim),
        'bias': randn(heads, window_size**2) * 0.1,
    }

    def run(backend: str, t):
        size = (height, width)
        logits = local_similarity(t['query'], t['key'], t['bias'], size, window_size, backend)
        out = local_aggregation(logits.softmax(-1), t['value'], size, window_size, backend)
        return logits, out

    return autotune.Problem(inputs, ('query', 'key', 'value', 'bias'), run, ('logits', 'out'))


def local_similarity(query: Tensor,
                     key: Tensor,
                     bias: Tensor,
                     size: Tuple[int, int],
                     window_size: int,
                     attn_impl: str = 'auto',
                     padding_mask: Optional[Tensor] = None) -> Tensor:
    """Similarity of each query with the keys of its window, plus a per-neighbour bias.

    Args:
        query, key (Tensor): (B, heads, H * W, D).
        bias (Tensor): (heads, window_size**2).
        size (tuple[int]): (H, W) of the feature map.
        window_size (int): odd side of the window.
        attn_impl (str): 'auto', 'ext', 'triton' or 'pytorch' (``mmtransnext.ops.backend``).
        padding_mask (Tensor, optional): (N, window_size**2), True outside the map; used by the
            PyTorch path (computed when not given).

    Returns:
        Tensor: (B, heads, H * W, window_size**2), ``-inf`` for neighbours outside the map.
    """
    height, width = size
    dtype = _kernel_dtype(query, key)
    backend = choose_backend('local_attention', attn_impl, query.device, dtype, torch.is_grad_enabled(),
                             _workload(query, size, window_size)).backend
    if backend == 'pytorch':
        return local_similarity_reference(query, key, bias, height, width, window_size, padding_mask)
    return _SIMILARITY[backend](query.to(dtype).contiguous(), key.to(dtype).contiguous(), bias.to(dtype).contiguous(),
                                height, width, window_size)


def local_aggregation(weights: Tensor,
                      value: Tensor,
                      size: Tuple[int, int],
                      window_size: int,
                      attn_impl: str = 'auto') -> Tensor:
    """Weighted sum of each pixel's window of values.

    Args:
        weights (Tensor): (B, heads, H * W, window_size**2).
        value (Tensor): (B, heads, H * W, D).
        size (tuple[int]): (H, W) of the feature map.
        window_size (int): odd side of the window.
        attn_impl (str): 'auto', 'ext', 'triton' or 'pytorch' (``mmtransnext.ops.backend``).

    Returns:
        Tensor: (B, heads, H * W, D).
    """
    height, width = size
    dtype = _kernel_dtype(weights, value)
    backend = choose_backend('local_attention', attn_impl, value.device, dtype, torch.is_grad_enabled(),
                             _workload(value, size, window_size)).backend
    if backend == 'pytorch':
        return local_aggregation_reference(weights, value, height, width, window_size)
    return _AGGREGATION[backend](weights.to(dtype).contiguous(), value.to(dtype).contiguous(), height, width,
                                 window_size)


autotune.register_problem('local_attention', _problem)
