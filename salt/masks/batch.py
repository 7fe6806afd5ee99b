"""The mask format every generator returns and every objective consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskBatch:
    """Index lists into the flat token grid, sorted ascending per sample, equal length across the batch.

    context_idx: tokens the encoder sees; pred_idx: tokens to predict. Disjoint per sample, except under the
    unmasked ablation (salt.masks.full), where both are every token.
    """

    context_idx: torch.Tensor  # (B, N_ctx) long
    pred_idx: torch.Tensor  # (B, N_pred) long

    def __post_init__(self) -> None:
        if self.context_idx.dim() != 2 or self.pred_idx.dim() != 2:
            raise ValueError("context_idx and pred_idx must be (B, K) tensors")
        if self.context_idx.shape[0] != self.pred_idx.shape[0]:
            raise ValueError("context_idx and pred_idx disagree on the batch size")

    @property
    def batch_size(self) -> int:
        return self.context_idx.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskBatch:
        return MaskBatch(self.context_idx.to(device, non_blocking=non_blocking),
                         self.pred_idx.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> MaskBatch:
        """Lets torch.utils.data.DataLoader(pin_memory=True) pin a batch holding MaskBatch objects."""
        return MaskBatch(self.context_idx.pin_memory(), self.pred_idx.pin_memory())
