"""V-JEPA multiblock 3D masks.

Semantics follow V-JEPA's `multiseq_multiblock3d` mask generator:
- each `BlockSpec` is one mask (V-JEPA's `cfgs_mask` entry) and yields its own `MaskBatch`;
- a block's size (t, h, w) is drawn once per batch, its position once per block per sample;
- the predicted set is the union of `num_blocks` blocks, the context is its complement;
- a sample whose context comes out empty is redrawn;
- index lists are sorted and then truncated to the shortest list in the batch, so every sample has the
  same number of context (and predicted) tokens. Truncation drops the highest indices (the latest
  tokens), exactly as V-JEPA does; the two sets stay disjoint.
Unlike V-JEPA, every draw (sizes and positions) comes from the caller's torch.Generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from salt.masks.batch import MaskBatch
from salt.masks.grid import TokenGrid

_MAX_REDRAWS = 1000


@dataclass(frozen=True)
class BlockSpec:
    """One multiblock mask: `num_blocks` blocks whose size is drawn from these (min, max) ranges."""

    num_blocks: int
    spatial_scale: tuple[float, float]  # fraction of the H'xW' plane one block covers
    temporal_scale: tuple[float, float] = (1.0, 1.0)  # fraction of T' one block spans
    aspect_ratio: tuple[float, float] = (0.75, 1.5)  # block height / width

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        for name in ("spatial_scale", "temporal_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        lo, hi = self.aspect_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"aspect_ratio must satisfy 0 < min <= max, got {(lo, hi)}")


# V-JEPA's video pretraining masks: short-range (8 small blocks) and long-range (2 large blocks).
SHORT_RANGE = BlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15))
LONG_RANGE = BlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7))
DEFAULT_MULTIBLOCK: tuple[BlockSpec, ...] = (SHORT_RANGE, LONG_RANGE)


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + torch.rand(1, generator=generator).item() * (hi - lo)


def sample_block_size(grid: TokenGrid, spec: BlockSpec, generator: torch.Generator) -> tuple[int, int, int]:
    """(t, h, w) of one block in tokens, V-JEPA's rounding."""
    t = max(1, int(grid.frames * _uniform(*spec.temporal_scale, generator)))
    num_spatial = int(grid.spatial_tokens * _uniform(*spec.spatial_scale, generator))
    ar = _uniform(*spec.aspect_ratio, generator)
    h = min(max(1, int(round(math.sqrt(num_spatial * ar)))), grid.height)
    w = min(max(1, int(round(math.sqrt(num_spatial / ar)))), grid.width)
    return t, h, w


def _randint(high_exclusive: int, generator: torch.Generator) -> int:
    return int(torch.randint(0, high_exclusive, (1,), generator=generator).item())


def sample_pred_mask(grid: TokenGrid, size: tuple[int, int, int], num_blocks: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Union of `num_blocks` blocks of `size` at random positions, as a flat bool mask (N,)."""
    t, h, w = size
    mask = torch.zeros(grid.shape, dtype=torch.bool)  # (T', H', W')
    for _ in range(num_blocks):
        start = _randint(grid.frames - t + 1, generator)
        top = _randint(grid.height - h + 1, generator)
        left = _randint(grid.width - w + 1, generator)
        mask[start:start + t, top:top + h, left:left + w] = True
    return mask.flatten()  # (N,)


class MultiBlockMaskGenerator:
    """Draws one MaskBatch per BlockSpec. Plain attributes only, so it pickles into loader workers."""

    def __init__(self, grid: TokenGrid, blocks: Sequence[BlockSpec] = DEFAULT_MULTIBLOCK) -> None:
        if not blocks:
            raise ValueError("need at least one BlockSpec")
        self.grid = grid
        self.blocks = tuple(blocks)

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskBatch]:
        return [self._draw(spec, batch_size, generator) for spec in self.blocks]

    def _draw(self, spec: BlockSpec, batch_size: int, generator: torch.Generator) -> MaskBatch:
        size = sample_block_size(self.grid, spec, generator)
        if size == self.grid.shape:
            raise ValueError(f"block size {size} covers the whole grid {self.grid.shape}: no context left")
        ctx_lists, pred_lists = [], []
        for _ in range(batch_size):
            for _ in range(_MAX_REDRAWS):
                pred = sample_pred_mask(self.grid, size, spec.num_blocks, generator)  # (N,) bool
                if not bool(pred.all()):
                    break
            else:
                raise RuntimeError(f"{_MAX_REDRAWS} draws of {spec} left no context on grid {self.grid.shape}")
            ctx_lists.append(torch.nonzero(~pred).squeeze(1))
            pred_lists.append(torch.nonzero(pred).squeeze(1))
        n_ctx = min(len(c) for c in ctx_lists)
        n_pred = min(len(p) for p in pred_lists)
        return MaskBatch(torch.stack([c[:n_ctx] for c in ctx_lists]),  # (B, N_ctx)
                         torch.stack([p[:n_pred] for p in pred_lists]))  # (B, N_pred)
