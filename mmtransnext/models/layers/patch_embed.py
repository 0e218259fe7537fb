import torch
import torch.nn as nn


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
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)
