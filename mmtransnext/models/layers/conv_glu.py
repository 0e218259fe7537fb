import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import choose_backend, gelu_gate, gelu_gate_backward
from ...ops.backend import autocast_dtype, in_autocast_dtype, in_compiled_graph


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution on a token sequence (B, N, C) laid out as an H x W map."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=True, groups=channels)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return _depthwise_conv(x, self.dwconv.weight, self.dwconv.bias, (H, W))


class ConvolutionalGLU(nn.Module):
    """Gated linear unit whose gate branch passes a 3x3 depthwise convolution.

    The hidden width is ``int(2 * feedforward_channels / 3)`` so that the two fc1 halves cost what one
    plain MLP of ``feedforward_channels`` would.

    Args:
        embed_dims (int): input and (by default) output width.
        feedforward_channels (int): nominal hidden width (``mlp_ratio * embed_dims``).
        out_channels (int, optional): output width. Defaults to ``embed_dims``.
        drop (float): dropout after the gate and after fc2. Defaults to 0.
        attn_impl (str): the backbone's implementation choice (``mmtransnext.ops.backend``): where
            the attention runs a kernel backend, backward recomputes the gate instead of keeping it
            (``memory_lean``) and the CPU op fuses the GELU gate (``gelu_gate``); 'pytorch' uses
            PyTorch's ops and autograd. Defaults to 'auto'.
    """

    def __init__(self, embed_dims, feedforward_channels=None, out_channels=None, drop=0., attn_impl='auto'):
        super().__init__()
        self.attn_impl = attn_impl
        out_channels = out_channels or embed_dims
        hidden = int(2 * (feedforward_channels or embed_dims) / 3)
        self.fc1 = nn.Linear(embed_dims, hidden * 2)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, out_channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        # fc1's two halves as two products: each output is contiguous (the convolution reads it as
        # channels_last), and backward adds two input gradients instead of concatenating 2x hidden
        hidden = self.fc1.out_features // 2
        weight, bias = self.fc1.weight, self.fc1.bias
        lean = choose_backend('memory_lean', self.attn_impl, x.device).backend != 'pytorch'
        if lean:  # one cast for both halves under autocast
            x = in_autocast_dtype(x)
        gate = F.linear(x, weight[:hidden], bias[:hidden])
        v = F.linear(x, weight[hidden:], bias[hidden:])
        if not lean or (self.drop.p > 0 and self.training) or not torch.is_grad_enabled():
            x = self.drop(gelu_gate(self.dwconv(gate, H, W), v, self.attn_impl))  # gelu(dwconv(gate)) * v
            return self.drop(self.fc2(x))
        conv = self.dwconv.dwconv
        return _GatedProjection.apply(gate, v, conv.weight, conv.bias, self.fc2.weight, self.fc2.bias, (H, W),
                                      self.attn_impl)


class _GatedProjection(torch.autograd.Function):
    """``fc2(gelu(dwconv(gate)) * value)`` keeping only ``gate`` and ``value`` for backward.

    Autograd would keep dwconv's output and fc2's input as well: two more (tokens x hidden) tensors
    per block, the largest activations of the backbone. Backward recomputes them (a depthwise
    convolution and the GELU gate, cheap next to the products) and frees each as soon as it is used, so
    that at most four (tokens x hidden) tensors exist at once. Under autocast the forward ran in the
    dtype of ``gate`` (with the weights cast to it); backward does the same.
    """

    @staticmethod
    def forward(ctx, gate, value, conv_weight, conv_bias, fc_weight, fc_bias, size, attn_impl):
        ctx.save_for_backward(gate, value, conv_weight, conv_bias, fc_weight)
        ctx.size, ctx.attn_impl = size, attn_impl
        hidden = gelu_gate(_depthwise_conv(gate, conv_weight, conv_bias, size), value, attn_impl)
        return F.linear(hidden, fc_weight, fc_bias)

    @staticmethod
    def backward(ctx, grad_out):
        gate, value, conv_weight, conv_bias, fc_weight = ctx.saved_tensors
        dtype = gate.dtype
        need = ctx.needs_input_grad
        grads = [None] * 8
        conv_out = _depthwise_conv(gate, conv_weight.to(dtype), conv_bias.to(dtype), ctx.size)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype)
        if need[4]:
            hidden = gelu_gate(conv_out, value, ctx.attn_impl)
            grads[4] = (grad_rows.t() @ hidden.reshape(-1, hidden.shape[-1])).to(fc_weight.dtype)
            del hidden
        if need[5]:
            grads[5] = grad_rows.sum(0).to(fc_weight.dtype)
        if not any(need[:4]):
            return tuple(grads)
        grad_hidden = (grad_rows @ fc_weight.to(dtype)).reshape(value.shape)
        grad_conv_out, grads[1] = gelu_gate_backward(grad_hidden, conv_out, value, ctx.attn_impl)
        del grad_hidden, conv_out
        grads[0], grad_weight, grad_bias = _depthwise_conv_backward(grad_conv_out, gate, conv_weight.to(dtype),
                                                                    ctx.size, (need[0], need[2], need[3]))
        grads[2] = None if grad_weight is None else grad_weight.to(conv_weight.dtype)
        grads[3] = None if grad_bias is None else grad_bias.to(conv_bias.dtype)
        return tuple(grads)


def _as_map(tokens: torch.Tensor, size) -> torch.Tensor:
    """(B, N, C) tokens as the (B, C, H, W) channels_last map they are in memory."""
    B, N, C = tokens.shape
    return tokens.reshape(B, *size, C).permute(0, 3, 1, 2)


def _shifted_windows(tokens: torch.Tensor, size):
    """The nine (B, H, W, C) views of the zero-padded NHWC map that a 3x3 window (padding 1) reads, row-major."""
    B, N, C = tokens.shape
    H, W = size
    padded = F.pad(tokens.reshape(B, H, W, C), (0, 0, 1, 1, 1, 1))
    return [padded[:, i:i + H, j:j + W] for i in range(3) for j in range(3)]


def _window_sum(tokens: torch.Tensor, size, taps: torch.Tensor, start) -> torch.Tensor:
    """``start`` plus the nine shifted windows of the (B, N, C) tokens, each times its row of the (9, C) ``taps``:
    a 3x3 depthwise convolution (padding 1) as inductor compiles it for any size; a (B, H, W, C) map."""
    out = start
    for window, tap in zip(_shifted_windows(tokens, size), taps):
        out = out + window * tap
    return out


def _depthwise_conv(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, size) -> torch.Tensor:
    """DepthwiseConv's 3x3 convolution (padding 1, a group per channel) on (B, N, C) tokens: they are an NHWC
    map, so it runs channels_last with no layout copies either way.

    Under torch.compile (``in_compiled_graph``; eager and torch.export keep the convolution) the same sums are nine
    shifted products: inductor (torch 2.14, dynamic sizes) cannot compile a training graph that keeps the
    channels_last view ``_as_map`` for backward (the partitioner keeps the view itself and inductor fails sorting its
    symbolic strides: "cannot determine truth value of Relational", pytorch/pytorch#185510), and its convolution
    lowerings fix the map's size (a recompilation per size). Shifted products of the NHWC tokens keep no
    channels_last view, and inductor fuses them into one kernel."""
    B, N, C = tokens.shape
    if in_compiled_graph():
        dtype = autocast_dtype(tokens.device) or tokens.dtype  # conv2d's: autocast's type where it is on
        tokens = tokens.to(dtype)
        taps = weight.reshape(C, 9).t().to(dtype)  # (9, C): tap i * 3 + j of every channel
        return _window_sum(tokens, size, taps, bias.to(dtype)).reshape(B, N, C)
    out = F.conv2d(_as_map(tokens, size), weight, bias, padding=1, groups=C)
    return out.permute(0, 2, 3, 1).reshape(B, N, C)


def _depthwise_conv_backward(grad: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor, size, need):
    """The gradients of :func:`_depthwise_conv` (tokens, weight, bias; None where ``need`` says so) for ``grad``
    of its output, both (B, N, C); under torch.compile as shifted products too."""
    B, N, C = tokens.shape
    if not in_compiled_graph():
        grad_map, token_map = _as_map(grad, size), _as_map(tokens, size)
        grad_tokens, grad_weight, grad_bias = torch.ops.aten.convolution_backward(grad_map, token_map, weight, [C],
                                                                                  [1, 1], [1, 1], [1, 1], False, [0, 0],
                                                                                  C, list(need))
        if grad_tokens is not None:
            grad_tokens = grad_tokens.permute(0, 2, 3, 1).reshape(B, N, C)
        return grad_tokens, grad_weight, grad_bias
    grad_tokens = grad_weight = grad_bias = None
    if need[0]:  # the transposed convolution: the same window sums with the taps mirrored
        grad_tokens = _window_sum(grad, size, weight.reshape(C, 9).t().flip(0), 0).reshape(B, N, C)
    if need[1]:
        grad_map = grad.reshape(B, *size, C)
        grad_weight = torch.stack([(window * grad_map).sum((0, 1, 2)) for window in _shifted_windows(tokens, size)],
                                  1).reshape(weight.shape)
    if need[2]:
        grad_bias = grad.sum((0, 1))
    return grad_tokens, grad_weight, grad_bias
