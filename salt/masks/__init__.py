"""Masks as index tensors, drawn on the CPU in the collate step from an explicit torch.Generator."""

from salt.masks.batch import MaskBatch
from salt.masks.factory import MASK_KINDS, MaskGenerator, build_mask_generator
from salt.masks.gather import gather_tokens
from salt.masks.grid import TokenGrid
from salt.masks.multiblock import (
    DEFAULT_MULTIBLOCK,
    LONG_RANGE,
    SHORT_RANGE,
    BlockSpec,
    MultiBlockMaskGenerator,
)
from salt.masks.stats import MaskStats, mask_stats
from salt.masks.tube import TubeMaskGenerator
from salt.masks.uniform import RandomMaskGenerator

__all__ = [
    "DEFAULT_MULTIBLOCK", "LONG_RANGE", "MASK_KINDS", "SHORT_RANGE", "BlockSpec", "MaskBatch",
    "MaskGenerator", "MaskStats", "MultiBlockMaskGenerator", "RandomMaskGenerator", "TokenGrid",
    "TubeMaskGenerator", "build_mask_generator", "gather_tokens", "mask_stats",
]
