"""The unmasked ablation: the encoder sees every token and every token is predicted.

For the student stage this is plain feature distillation (the predictor maps the student's tokens of the
whole clip to the teacher's at the same positions): the easiest form of the latent-prediction task, the
ceiling of what masking can leave the student to learn. Not a training recipe for the teacher (an
autoencoder) or V-JEPA (its target is its own input).
"""

from __future__ import annotations

import torch

from salt.masks.batch import MaskBatch
from salt.masks.grid import TokenGrid


class FullMaskGenerator:
    """context_idx = pred_idx = every token (the one kind whose two sets are not disjoint)."""

    def __init__(self, grid: TokenGrid) -> None:
        self.grid = grid

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskBatch]:
        every = torch.arange(self.grid.num_tokens).expand(batch_size, -1)  # (B, N)
        return [MaskBatch(every.clone(), every.clone())]
