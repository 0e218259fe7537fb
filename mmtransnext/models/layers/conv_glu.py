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
        x = self.drop(gelu_gate(self.dwconv(gate, H, W), v, self.attn_impl))  # gelu(dwconv(gate)) * v
        return self.drop(self.fc2(x))
