import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops.backend import in_compiled_graph


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping windows, then LayerNorm over channels.

    Args:
        patch_size (int): kernel size (odd; padding keeps the stride's output size).
        stride (int): downsampling factor.
        in_channels (int): input channels.
        embed_dims (int): output channels.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-5 (the official patch embed keeps
            LayerNorm's default, unlike the blocks' 1e-6).
    """

    def __init__(self, patch_size=7, stride=4, in_channels=3, embed_dims=768, norm_eps=1e-5):
        super().__init__()
        if patch_size <= stride:
            raise ValueError(f'patch_size ({patch_size}) must exceed stride ({stride}) for overlap')
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def forward(self, x: torch.Tensor):
        """Returns tokens (B, H*W, C) and the output grid (H, W)."""
        if in_compiled_graph():
            tokens, size = self.unfolded_projection(x)
            return self.norm(tokens), size
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)

    def unfolded_projection(self, x: torch.Tensor):
        """``self.proj`` as one product of the (B, H * W, C_in * k * k) windows with the flattened kernel: the
        spelling under torch.compile, where inductor's convolution backward on the CPU fixes the input's size and
        layout (torch 2.14: a recompilation per size, or a stride check that fails at the next size). The windows
        are strided slices of the padded input, in the kernel's (C_in, k, k) order; the same sums up to float
        rounding."""
        k, s, p = self.proj.kernel_size[0], self.proj.stride[0], self.proj.padding[0]
        B, C = x.shape[:2]
        H, W = (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1
        padded = F.pad(x, (p, p, p, p))
        windows = torch.stack(
            [padded[:, :, i:i + s * (H - 1) + 1:s, j:j + s * (W - 1) + 1:s] for i in range(k) for j in range(k)],
            2)  # (B, C_in, k * k, H, W)
        windows = windows.reshape(B, C * k * k, H * W).transpose(1, 2)
        return F.linear(windows, self.proj.weight.flatten(1), self.proj.bias), (H, W)
