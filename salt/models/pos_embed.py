"""Fixed 3D sin-cos position embeddings (V-JEPA style: half the channels for time, a quarter each for h, w)."""

from __future__ import annotations

import torch

from salt.masks.grid import TokenGrid


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos (N,) -> (N, dim): [sin(pos * w_i), cos(pos * w_i)], w_i = 10000^(-i / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2))
    angles = pos.to(torch.float64).unsqueeze(1) * omega.unsqueeze(0)  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()  # (N, dim)


def sincos_3d(embed_dim: int, grid: TokenGrid, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, embed_dim) embedding of each token of `grid` in flat (t, h, w) order."""
    if embed_dim % 4:
        raise ValueError(f"3D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    dim_hw = 2 * (embed_dim // 8)
    dim_t = embed_dim - 2 * dim_hw
    coords = grid.coords(device)  # (N, 3)
    return torch.cat([sincos_1d(dim_t, coords[:, 0]), sincos_1d(dim_hw, coords[:, 1]),
                      sincos_1d(dim_hw, coords[:, 2])], dim=1)  # (N, D)
