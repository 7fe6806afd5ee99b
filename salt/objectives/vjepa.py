"""V-JEPA baseline: the student objective against an EMA copy of the encoder, for matched-compute comparisons."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from salt.build import build_model_encoder, token_grid
from salt.config import Config
from salt.flops import StepFlops, mask_counts, vjepa_step_flops
from salt.masks.batch import MaskBatch
from salt.models import build_predictor
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder
from salt.objectives.base import Objective, refuse_unused
from salt.objectives.common import ObjectiveOutput, as_mask_list, average_losses, freeze
from salt.objectives.latent import compute_teacher_targets, latent_prediction_losses


def momentum_schedule(step: int, total_steps: int, start: float = 0.998, end: float = 1.0) -> float:
    """EMA momentum rising linearly from `start` at step 0 to `end` at `total_steps` (then held)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


class VJEPAObjective(Objective):
    needs_full_parameters = True  # the EMA update reads every weight

    def __init__(self, encoder: VideoViT, predictor: TokenDecoder, *, ema_start: float = 0.998,
                 ema_end: float = 1.0) -> None:
        super().__init__()
        if predictor.in_dim != encoder.embed_dim or predictor.out_dim != encoder.embed_dim:
            raise ValueError("V-JEPA's predictor maps the encoder's width to itself")
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = freeze(copy.deepcopy(encoder))
        self.ema_start, self.ema_end = ema_start, ema_end

    @classmethod
    def from_config(cls, cfg: Config, *, teacher_width: int | None = None,
                    num_classes: int | None = None) -> VJEPAObjective:
        enc = build_model_encoder(cfg)
        pred = build_predictor(grid=token_grid(cfg), in_dim=enc.embed_dim, out_dim=enc.embed_dim,
                               spec=cfg.predictor, use_rope=cfg.model.use_rope)
        return cls(enc, pred, ema_start=cfg.ema.start, ema_end=cfg.ema.end)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.predictor]

    def exported_encoder(self) -> VideoViT:
        return self.encoder

    def step_flops(self, masks: Sequence[MaskBatch] | None, *, cached_targets: bool = False) -> StepFlops:
        enc = self.encoder
        return vjepa_step_flops(enc.spec, self.predictor.spec, n_tokens=enc.num_tokens,
                                patch_dim=enc.patch_embed.patch_dim, masks=mask_counts(masks))

    def after_step(self, step: int, total_steps: int) -> None:
        self.ema_update(momentum_schedule(step, total_steps, self.ema_start, self.ema_end))

    def extra_state(self) -> dict[str, Any]:
        return {"ema_target": self.target_encoder.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "ema_target" in state:
            self.target_encoder.load_state_dict(state["ema_target"])

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

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch], *,
                targets: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        refuse_unused("vjepa", targets=targets, labels=labels)
        masks = as_mask_list(masks)
        targets = compute_teacher_targets(self.target_encoder, clips)  # (B, N, D)
        losses, features = latent_prediction_losses(self.encoder, self.predictor, clips, masks, targets)
        return average_losses(losses, masks, self.encoder.num_tokens, features)
