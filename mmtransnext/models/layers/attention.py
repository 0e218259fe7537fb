"""TransNeXt attention: aggregated attention (stages 1-3) and full attention (stage 4).

Both are length-scaled cosine attention with a learnable query embedding and a continuous
position bias produced by a small MLP from log-spaced relative coordinates. Attribute names follow
the official implementation, so released checkpoints load unchanged.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import (choose_backend, local_aggregation, local_similarity, pooled_attention, pooled_attention_backend,
                    position_bias_mlp)
from ...ops.backend import autocast_dtype, in_autocast_dtype, in_compiled_graph
from .pooling import pool_tokens, pools_as_products
from .position_bias import StageGeometry, gather_position_bias, position_bias_rows


def _split_heads(x: torch.Tensor, parts: int, heads: int):
    """(B, N, parts * heads * head_dim) tokens -> ``parts`` tensors (B, heads, N, head_dim), each contiguous
    in its own storage (so that one kept for backward does not keep the others alive)."""
    B, N, C = x.shape
    return [t.transpose(1, 2).contiguous() for t in x.reshape(B, N, parts, heads, C // (parts * heads)).unbind(2)]


# The op path keeps less for backward than autograd would. Each function below computes exactly what the
# PyTorch expression in its docstring computes (same operations forward, bitwise), but keeps only tensors
# that are kept anyway, so that a full-size (tokens x channels) input is not held through the forward.


class _Normalize(torch.autograd.Function):
    """``F.normalize(x, dim=-1)`` keeping its output (which the attention keeps anyway), not its input; or, with
    ``keep_input`` (under autocast, where what is kept is a reduced copy of the output), its input, from which
    backward recomputes the output (the same operation on the same values)."""

    @staticmethod
    def forward(ctx, x, keep_input=False):
        # F.normalize's eps written as a literal, not a default argument or a global: torch.compile (dynamic=True)
        # makes a float read from either a symbolic input of the first call's subgraph and then hands that dead
        # subgraph's value to the next call ("lift_tracked_freevar_to_input should not be called on root
        # SubgraphTracer", torch 2.14: issue 35)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        out = x / norm.clamp_min(1e-12)
        ctx.save_for_backward(x if keep_input else out, norm)
        ctx.keep_input = keep_input
        return out

    @staticmethod
    def backward(ctx, grad):
        kept, norm = ctx.saved_tensors
        clamped = norm.clamp_min(1e-12)
        out = kept / clamped if ctx.keep_input else kept
        # d(x / n) = (g - out * <out, g>) / n where n > eps; the clamped norm passes no gradient
        along = (out * grad).sum(-1, keepdim=True) * (norm >= 1e-12)
        return (grad - out * along) / clamped, None


class _TokenWeights(torch.autograd.Function):
    """``q_norm @ tokens`` as autocast computes it (both in ``dtype``), keeping ``q_norm`` (kept anyway) instead of
    its reduced copy: backward casts it again."""

    @staticmethod
    def forward(ctx, q_norm, tokens, dtype):
        ctx.save_for_backward(q_norm, tokens)
        ctx.dtype = dtype
        return q_norm.to(dtype) @ tokens.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        q_norm, tokens = ctx.saved_tensors
        grad = grad.to(ctx.dtype)
        grad_q = (grad @ tokens.to(ctx.dtype).transpose(-2, -1)).to(q_norm.dtype)
        grad_tokens = (q_norm.to(ctx.dtype).transpose(-2, -1) @ grad).sum(0).to(tokens.dtype)
        return grad_q, grad_tokens, None


class _ScaleQueries(torch.autograd.Function):
    """``(q_norm + embedding) * softplus(temperature) * length_scale`` keeping q_norm (kept anyway)
    instead of the sum."""

    @staticmethod
    def forward(ctx, q_norm, embedding, temperature, length_scale):
        ctx.save_for_backward(q_norm, embedding, temperature, length_scale)
        return (q_norm + embedding) * F.softplus(temperature) * length_scale

    @staticmethod
    def backward(ctx, grad):
        q_norm, embedding, temperature, length_scale = ctx.saved_tensors
        grad_scaled = grad * length_scale  # d / d ((q_norm + embedding) * softplus(temperature))
        grad_shifted = grad_scaled * F.softplus(temperature)
        grad_embedding = grad_shifted.sum(dim=(0, 2), keepdim=True).squeeze(0)
        grad_softplus = ((q_norm + embedding) * grad_scaled).sum(dim=(0, 2, 3), keepdim=True).squeeze(0)
        return grad_shifted, grad_embedding, grad_softplus * torch.sigmoid(temperature), None


class _AvgPool(torch.autograd.Function):
    """``F.adaptive_avg_pool2d(x, size)`` keeping nothing: its backward reads only the input's shape and layout.

    The gradient comes back in the input's layout (channels_last here), as autograd's own pooling backward
    does: the (B, N, C) gradient upstream then stays contiguous (torch 2.1's CPU GELU backward gets a
    strided gradient wrong, measured).
    """

    @staticmethod
    def forward(ctx, x, size):
        ctx.shape = x.shape
        ctx.layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else \
            torch.contiguous_format
        return F.adaptive_avg_pool2d(x, size)

    @staticmethod
    def backward(ctx, grad):
        # the kernel reads only the shape and memory format of this never-written buffer
        like_input = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        return torch.ops.aten._adaptive_avg_pool2d_backward(grad.contiguous(), like_input), None


class _CosineAttention(nn.Module):
    """Parts shared by both attentions: temperature, query embedding, bias MLP, output projection.

    ``record_weights = True`` makes the forward keep its post-softmax attention weights (before
    dropout) in ``recorded_weights``: (B, heads, N, local_len + pool_len) for aggregated attention,
    local keys first, (B, heads, N, N) for full attention. The softmax then runs on the reference
    path (the fused op never holds the weights); the output is the same. For visualisation tools.
    """
    record_weights = False

    def __init__(self, embed_dims: int, num_heads: int, attn_drop: float = 0., proj_drop: float = 0., attn_impl='auto'):
        super().__init__()
        self.attn_impl = attn_impl
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims {embed_dims} must be divisible by num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dim = embed_dims // num_heads
        # softplus(temperature) starts at 1 / 0.24
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1) / 0.24).exp() - 1))
        self.query_embedding = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim), mean=0, std=0.02))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        # MLP generating the continuous relative position bias from coordinates
        self.cpb_fc1 = nn.Linear(2, 512, bias=True)
        self.cpb_fc2 = nn.Linear(512, num_heads, bias=True)

    def position_bias_values(self, geometry: StageGeometry) -> torch.Tensor:
        """The bias MLP on every distinct relative offset: (heads, offsets)."""
        table = geometry.rel_table.to(self.cpb_fc1.weight.dtype)
        return position_bias_mlp(table, self.cpb_fc1.weight, self.cpb_fc1.bias, self.cpb_fc2.weight, self.cpb_fc2.bias,
                                 self.attn_impl)

    def position_bias(self, geometry: StageGeometry) -> torch.Tensor:
        """Continuous position bias (heads, N, pool_len) for the current feature size."""
        return gather_position_bias(self.position_bias_values(geometry), geometry.bias_taps, geometry.size,
                                    geometry.pool_size)

    def use_fused_softmax(self, q_scaled: torch.Tensor, value: torch.Tensor, local_len: int,
                          geometry: StageGeometry) -> bool:
        """Whether the softmax runs in the fused op (``mmtransnext.ops.pooled_attention``): where the op's
        backend (``mmtransnext.ops.backend``) is not the reference, and not where the attention weights are
        needed (recording them, or dropout on them)."""
        if self.record_weights or (self.attn_drop.p > 0 and self.training):
            return False
        taps = geometry.bias_taps.cols_taps_index.shape[0]
        return pooled_attention_backend(q_scaled, value, local_len, geometry.pool_size, geometry.size, taps,
                                        self.attn_impl).backend != 'pytorch'

    def fused_softmax(self, q_scaled, key, value, local_logits, geometry: StageGeometry):
        """softmax([local logits, q . key + position bias]) split into (pooled output, local weights),
        without the (N, pool_len) logits."""
        taps = geometry.bias_taps
        rows = position_bias_rows(self.position_bias_values(geometry), taps, geometry.size, geometry.pool_size)
        return pooled_attention(q_scaled, key, value, rows, taps.cols_taps_index, taps.cols_taps_weight, local_logits,
                                geometry.size, self.attn_impl, taps.cols_inverse)

    def keep_if_recording(self, weights: torch.Tensor) -> torch.Tensor:
        if self.record_weights:
            self.recorded_weights = weights.detach()
        return weights

    def keeps_less(self, device: torch.device) -> bool:
        """Whether the memory-lean autograd functions above replace the reference expressions (kernel paths)."""
        return choose_backend('memory_lean', self.attn_impl, device).backend != 'pytorch'

    def cast_once(self, x: torch.Tensor) -> torch.Tensor:
        """``x``, read by several products, in autocast's type once on the kernel paths (``in_autocast_dtype``)."""
        return in_autocast_dtype(x) if self.keeps_less(x.device) else x

    def normalize(self, x: torch.Tensor, kept_reduced: bool = False) -> torch.Tensor:
        """``F.normalize(x, dim=-1)``; ``kept_reduced``: what reads the output keeps only its autocast copy."""
        if not self.keeps_less(x.device):
            return F.normalize(x, dim=-1)
        return _Normalize.apply(x, kept_reduced and autocast_dtype(x.device) is not None)

    def scale_queries(self, q_norm: torch.Tensor, geometry: StageGeometry) -> torch.Tensor:
        if self.keeps_less(q_norm.device):
            return _ScaleQueries.apply(q_norm, self.query_embedding, self.temperature, geometry.seq_length_scale)
        return (q_norm + self.query_embedding) * F.softplus(self.temperature) * geometry.seq_length_scale

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_drop(self.proj(x))


class AggregatedAttention(_CosineAttention):
    """Pixel-focused aggregated attention: each query attends to its ``window_size`` x
    ``window_size`` neighbourhood and to ``sr_ratio``-pooled keys under one softmax.

    Args:
        embed_dims (int): embedding dimension.
        num_heads (int): number of heads.
        window_size (int): odd side of the local window. Defaults to 3.
        sr_ratio (int): pooling ratio of the pooled keys. Defaults to 8.
        qkv_bias (bool): bias in the query / key-value projections. Defaults to True.
        attn_drop (float): dropout on attention weights. Defaults to 0.
        proj_drop (float): dropout after the output projection. Defaults to 0.
        attn_impl (str): 'auto' (per op and device the fastest measured backend that can run,
            ``mmtransnext.ops.backend``), 'ext' (the C++/CUDA op, an error if it is not built),
            'triton' (the Triton kernels) or 'pytorch' (the reference arithmetic). The kernels
            compute the local window and the split softmax over local and pooled keys, whose
            (N, pool_len) logits they never materialise. Defaults to 'auto'.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 window_size=3,
                 sr_ratio=8,
                 qkv_bias=True,
                 attn_drop=0.,
                 proj_drop=0.,
                 attn_impl='auto'):
        super().__init__(embed_dims, num_heads, attn_drop, proj_drop, attn_impl)
        if window_size % 2 != 1:
            raise ValueError(f'window_size must be odd, got {window_size}')
        self.window_size = window_size
        self.local_len = window_size**2
        self.sr_ratio = sr_ratio

        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        # pooled-key branch
        self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=1, stride=1, padding=0)
        self.norm = nn.LayerNorm(embed_dims)
        self.act = nn.GELU()
        # static bias per neighbour, and the query-dependent ("dynamic") local bias
        self.relative_pos_bias_local = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, self.local_len), mean=0, std=0.0004))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, self.head_dim, self.local_len), mean=0, std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, self.local_len))

    def token_weights(self, q_norm: torch.Tensor) -> torch.Tensor:
        """The query-dependent local weights ``q_norm @ learnable_tokens``."""
        dtype = autocast_dtype(q_norm.device) if self.keeps_less(q_norm.device) else None
        if dtype is None:
            return q_norm @ self.learnable_tokens
        return _TokenWeights.apply(q_norm, self.learnable_tokens, dtype)

    def forward(self, x: torch.Tensor, geometry: StageGeometry) -> torch.Tensor:
        B, N, C = x.shape
        pool_len = geometry.pool_size[0] * geometry.pool_size[1]
        heads, head_dim = self.num_heads, self.head_dim
        x = self.cast_once(x)  # read by q, kv and sr

        # queries, keys and values in the (B, heads, N, head_dim) layout that every op below reads: one copy
        # here instead of one per op (each would keep its own copy for backward)
        q_norm = self.normalize(_split_heads(self.q(x), 1, heads)[0])
        q_scaled = self.cast_once(self.scale_queries(q_norm, geometry))  # read by the local and pooled parts

        # local keys / values: every pixel's window, keys L2-normalised
        k_local, v_local = _split_heads(self.kv(x), 2, heads)
        k_local = self.normalize(k_local, kept_reduced=True)
        attn_local = local_similarity(q_scaled, k_local, self.relative_pos_bias_local, geometry.size, self.window_size,
                                      self.attn_impl, geometry.padding_mask)

        # pooled keys / values
        # sr is a 1x1 convolution, i.e. a linear map of each token: applied to the (B, N, C) tokens as
        # one matrix product, then pooled as a channels_last map (no layout copies at full size)
        x_pool = self.act(F.linear(x, self.sr.weight.flatten(1), self.sr.bias))
        if in_compiled_graph() or pools_as_products():
            x_pool = pool_tokens(x_pool, geometry.size, geometry.pool_size)  # the reason: pooling.py
        else:
            x_pool = x_pool.reshape(B, *geometry.size, C).permute(0, 3, 1, 2)
            pool = _AvgPool.apply if self.keeps_less(x.device) else F.adaptive_avg_pool2d
            x_pool = pool(x_pool, geometry.pool_size).flatten(2).transpose(1, 2)
        x_pool = self.norm(x_pool)
        k_pool, v_pool = self.kv(x_pool).reshape(B, pool_len, 2 * heads, head_dim).permute(0, 2, 1, 3).chunk(2, dim=1)
        k_pool = F.normalize(k_pool, dim=-1)

        # one softmax over local + pooled similarities
        if self.use_fused_softmax(q_scaled, v_pool, self.local_len, geometry):
            x_pool, attn_local = self.fused_softmax(q_scaled, k_pool, v_pool, attn_local, geometry)
        else:
            attn_pool = q_scaled @ k_pool.transpose(-2, -1) + self.position_bias(geometry)
            attn = self.keep_if_recording(torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1))
            attn = self.attn_drop(attn)
            attn_local, attn_pool = torch.split(attn, [self.local_len, pool_len], dim=-1)
            x_pool = attn_pool @ v_pool

        # the query-dependent local weights are linear in the value sum: added after the softmax
        local_weights = self.token_weights(q_norm) + self.learnable_bias + attn_local
        x_local = local_aggregation(local_weights, v_local, geometry.size, self.window_size, self.attn_impl)
        out = (x_local + x_pool).transpose(1, 2).reshape(B, N, C)
        return self.project(out)


class FullAttention(_CosineAttention):
    """Length-scaled cosine self-attention over all tokens (TransNeXt's last stage).

    Args:
        embed_dims (int): embedding dimension.
        num_heads (int): number of heads.
        qkv_bias (bool): bias in the qkv projection. Defaults to True.
        attn_drop (float): dropout on attention weights. Defaults to 0.
        proj_drop (float): dropout after the output projection. Defaults to 0.
        attn_impl (str): 'auto', 'ext', 'triton' or 'pytorch': the softmax with its position bias
            in the fused op ``mmtransnext.ops.pooled_attention`` (and the bias MLP fused on the CPU),
            or the reference arithmetic. Defaults to 'auto'.
    """

    def __init__(self, embed_dims, num_heads, qkv_bias=True, attn_drop=0., proj_drop=0., attn_impl='auto'):
        super().__init__(embed_dims, num_heads, attn_drop, proj_drop, attn_impl)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)

    def forward(self, x: torch.Tensor, geometry: StageGeometry) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = _split_heads(self.qkv(x), 3, self.num_heads)
        q_scaled, k = self.scale_queries(self.normalize(q), geometry), self.normalize(k, kept_reduced=True)
        if self.use_fused_softmax(q_scaled, v, 0, geometry):  # the same op, with no local keys
            out, _ = self.fused_softmax(q_scaled, k, v, q_scaled.new_empty(*q_scaled.shape[:3], 0), geometry)
        else:
            logits = q_scaled @ k.transpose(-2, -1) + self.position_bias(geometry)
            attn = self.keep_if_recording(logits.softmax(dim=-1))
            out = self.attn_drop(attn) @ v
        return self.project(out.transpose(1, 2).reshape(B, N, C))
