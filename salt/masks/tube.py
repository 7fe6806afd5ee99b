"""VideoMAE tube masking: the same random spatial positions are masked in every frame."""

from __future__ import annotations

import torch

from salt.masks.batch import MaskBatch
from salt.masks.grid import TokenGrid


class TubeMaskGenerator:
    """Masks int(mask_ratio * H'W') spatial positions per sample, through all T' frames."""

    def __init__(self, grid: TokenGrid, mask_ratio: float = 0.9) -> None:
        num_masked = int(mask_ratio * grid.spatial_tokens)
        if not 0 < num_masked < grid.spatial_tokens:
            raise ValueError(f"mask_ratio {mask_ratio} masks {num_masked} of {grid.spatial_tokens} positions")
        self.grid = grid
        self.mask_ratio = mask_ratio
        self.num_masked = num_masked

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskBatch]:
        g = self.grid
        order = torch.rand(batch_size, g.spatial_tokens, generator=generator).argsort(dim=1)  # (B, HW)
        masked_hw = order[:, :self.num_masked].sort(dim=1).values  # (B, M)
        kept_hw = order[:, self.num_masked:].sort(dim=1).values  # (B, HW - M)
        offsets = torch.arange(g.frames).view(1, -1, 1) * g.spatial_tokens  # (1, T', 1)
        ctx = (kept_hw.unsqueeze(1) + offsets).flatten(1)  # (B, T' * (HW - M)), ascending
        pred = (masked_hw.unsqueeze(1) + offsets).flatten(1)  # (B, T' * M), ascending
        return [MaskBatch(ctx, pred)]
