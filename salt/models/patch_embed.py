"""3D patch embedding: a Conv3d over (tubelet, patch, patch) cubes."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, T'*H'*W', D), tokens flattened t-major, then h, then w."""

    def __init__(self, *, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    @property
    def patch_dim(self) -> int:
        """Pixels (times channels) per token: the conv's fan-in."""
        return self.in_chans * self.tubelet_size * self.patch_size * self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, T, H, W) -> (B, D, T', H', W') -> (B, N, D)
