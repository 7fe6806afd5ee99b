"""Uniform random token masking over the whole (T', H', W') grid."""

from __future__ import annotations

import torch

from salt.masks.batch import MaskBatch
from salt.masks.grid import TokenGrid


class RandomMaskGenerator:
    """Masks int(mask_ratio * N) tokens per sample, chosen uniformly without replacement."""

    def __init__(self, grid: TokenGrid, mask_ratio: float = 0.9) -> None:
        num_masked = int(mask_ratio * grid.num_tokens)
        if not 0 < num_masked < grid.num_tokens:
            raise ValueError(f"mask_ratio {mask_ratio} masks {num_masked} of {grid.num_tokens} tokens")
        self.grid = grid
        self.mask_ratio = mask_ratio
        self.num_masked = num_masked

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskBatch]:
        order = torch.rand(batch_size, self.grid.num_tokens, generator=generator).argsort(dim=1)  # (B, N)
        pred = order[:, :self.num_masked].sort(dim=1).values  # (B, N_pred)
        ctx = order[:, self.num_masked:].sort(dim=1).values  # (B, N_ctx)
        return [MaskBatch(ctx, pred)]
