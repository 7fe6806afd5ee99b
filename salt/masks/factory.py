"""build_mask_generator: one entry point for the collate step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from salt.masks.batch import MaskBatch
from salt.masks.full import FullMaskGenerator
from salt.masks.grid import TokenGrid
from salt.masks.multiblock import DEFAULT_MULTIBLOCK, BlockSpec, MultiBlockMaskGenerator
from salt.masks.tube import TubeMaskGenerator
from salt.masks.uniform import RandomMaskGenerator

MASK_KINDS = ("multiblock", "tube", "random", "full")


class MaskGenerator(Protocol):
    grid: TokenGrid

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskBatch]:
        """One MaskBatch per mask the objective averages over (multiblock: one per BlockSpec)."""
        ...


def build_mask_generator(kind: str, *, grid: TokenGrid, mask_ratio: float = 0.9,
                         blocks: Sequence[BlockSpec] = DEFAULT_MULTIBLOCK) -> MaskGenerator:
    """kind: "multiblock" (uses `blocks`), "tube" or "random" (use `mask_ratio`), or "full" (no masking: see
    and predict every token, the ablation of salt.masks.full)."""
    if kind == "multiblock":
        return MultiBlockMaskGenerator(grid, blocks)
    if kind == "tube":
        return TubeMaskGenerator(grid, mask_ratio)
    if kind == "random":
        return RandomMaskGenerator(grid, mask_ratio)
    if kind == "full":
        return FullMaskGenerator(grid)
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
