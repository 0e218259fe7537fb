import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import gelu_gate


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution on a token sequence (B, N, C) laid out as an H x W map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        # (B, N, C) tokens are an NHWC map: convolve it as channels_last, no layout copies either way
        x = self.dwconv(x.reshape(B, H, W, C).permute(0, 3, 1, 2))
        return x.permute(0, 2, 3, 1).reshape(B, N, C)


class ConvolutionalGLU(nn.Module):
    """Gated linear unit whose gate branch passes a 3x3 depthwise convolution.

    The hidden width is ``int(2 * hidden_features / 3)`` so that the two fc1 halves cost what one
    plain MLP of ``hidden_features`` would.

    Args:
        in_features (int): input and (by default) output width.
        hidden_features (int): nominal hidden width (``mlp_ratio * in_features``).
        out_features (int, optional): output width. Defaults to ``in_features``.
        drop (float): dropout after the gate and after fc2. Defaults to 0.
        attn_impl (str): the backbone's implementation choice: 'auto' / 'ext' compute the GELU gate
            in one fused pass on the CPU (``mmtransnext.ops.gelu_gate``), 'pytorch' with PyTorch's
            ops. Defaults to 'auto'.
    """

    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0., attn_impl='auto'):
        super().__init__()
        self.attn_impl = attn_impl
        out_features = out_features or in_features
        hidden_features = int(2 * (hidden_features or in_features) / 3)
        self.fc1 = nn.Linear(in_features, hidden_features * 2)
        self.dwconv = DepthwiseConv(hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        # fc1's two halves as two products: each output is contiguous (the convolution reads it as
        # channels_last), and backward adds two input gradients instead of concatenating 2x hidden
        hidden = self.fc1.out_features // 2
        weight, bias = self.fc1.weight, self.fc1.bias
        gate = F.linear(x, weight[:hidden], bias[:hidden])
        v = F.linear(x, weight[hidden:], bias[hidden:])
        if self.attn_impl == 'pytorch' or (self.drop.p > 0 and self.training) or not torch.is_grad_enabled():
            x = self.drop(gelu_gate(self.dwconv(gate, H, W), v, self.attn_impl))  # gelu(dwconv(gate)) * v
            return self.drop(self.fc2(x))
        return _GatedProjection.apply(gate, v, self.dwconv.dwconv.weight, self.dwconv.dwconv.bias, self.fc2.weight,
                                      self.fc2.bias, self.dwconv, (H, W), self.attn_impl)


class _GatedProjection(torch.autograd.Function):
    """``fc2(gelu(dwconv(gate)) * value)`` keeping only ``gate`` and ``value`` for backward.

    Autograd would keep dwconv's output and fc2's input as well: two more (tokens x hidden) tensors
    per block, the largest activations of the backbone. Backward recomputes them (a depthwise
    convolution and the GELU gate, cheap next to the products) and computes fc2's gradients itself.
    """

    @staticmethod
    def forward(ctx, gate, value, conv_weight, conv_bias, fc_weight, fc_bias, dwconv, size, attn_impl):
        ctx.save_for_backward(gate, value, fc_weight)
        ctx.dwconv, ctx.size, ctx.attn_impl = dwconv, size, attn_impl
        device = gate.device.type  # backward recomputes under the forward's autocast state
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        return F.linear(gelu_gate(dwconv(gate, *size), value, attn_impl), fc_weight, fc_bias)

    @staticmethod
    def backward(ctx, grad_out):
        gate, value, fc_weight = ctx.saved_tensors
        conv = ctx.dwconv.dwconv
        device, dtype, enabled = ctx.autocast
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            gate, value = gate.detach().requires_grad_(), value.detach().requires_grad_()
            hidden = gelu_gate(ctx.dwconv(gate, *ctx.size), value, ctx.attn_impl)
            grad_hidden = grad_out @ fc_weight
            grads = [None] * 9
            grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
            if ctx.needs_input_grad[4]:
                grads[4] = (grad_rows.t() @ hidden.detach().reshape(-1, hidden.shape[-1])).to(fc_weight.dtype)
            if ctx.needs_input_grad[5]:
                grads[5] = grad_rows.sum(0).to(fc_weight.dtype)
        # gate, value and the convolution's parameters, as far as they need gradients (frozen stages do not)
        wanted = [i for i in range(4) if ctx.needs_input_grad[i]]
        if wanted:
            inputs = (gate, value, conv.weight, conv.bias)
            for i, grad in zip(wanted, torch.autograd.grad(hidden, [inputs[i] for i in wanted], grad_hidden)):
                grads[i] = grad
        return tuple(grads)
