"""V-JEPA baseline: the student objective against an EMA copy of the encoder, for matched-compute comparisons."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from salt.masks.batch import MaskBatch
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder
from salt.objectives.common import ObjectiveOutput, as_mask_list, average_losses, freeze
from salt.objectives.latent import compute_teacher_targets, latent_prediction_losses


def momentum_schedule(step: int, total_steps: int, start: float = 0.998, end: float = 1.0) -> float:
    """EMA momentum rising linearly from `start` at step 0 to `end` at `total_steps` (then held)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


class VJEPAObjective(nn.Module):
    def __init__(self, encoder: VideoViT, predictor: TokenDecoder) -> None:
        super().__init__()
        if predictor.in_dim != encoder.embed_dim or predictor.out_dim != encoder.embed_dim:
            raise ValueError("V-JEPA's predictor maps the encoder's width to itself")
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = freeze(copy.deepcopy(encoder))

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.predictor]

    def train(self, mode: bool = True) -> VJEPAObjective:
        super().train(mode)
        self.target_encoder.eval()
        return self

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for every parameter. Call after optimizer.step()."""
        tgt = list(self.target_encoder.parameters())
        src = [p.detach().to(t.dtype) for p, t in zip(self.encoder.parameters(), tgt, strict=True)]
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch]) -> ObjectiveOutput:
        masks = as_mask_list(masks)
        targets = compute_teacher_targets(self.target_encoder, clips)  # (B, N, D)
        losses, features = latent_prediction_losses(self.encoder, self.predictor, clips, masks, targets)
        return average_losses(losses, masks, self.encoder.num_tokens, features)
