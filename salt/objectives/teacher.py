"""Stage 1: train the teacher by pixel reconstruction of the masked tubelets (VideoMAE loss, multiblock masks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from salt.build import build_model_encoder, token_grid
from salt.config import Config
from salt.flops import StepFlops, mask_counts, teacher_step_flops
from salt.masks.batch import MaskBatch
from salt.masks.gather import gather_tokens
from salt.models import build_pixel_decoder
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder
from salt.objectives.base import Objective, refuse_unused
from salt.objectives.common import ObjectiveOutput, as_mask_list, average_losses
from salt.objectives.pixel_targets import pixel_targets

PIXEL_LOSSES = ("mse", "l1")


class TeacherObjective(Objective):
    """Encoder over the context tokens -> pixel decoder -> pixels of the predicted tubelets."""

    def __init__(self, encoder: VideoViT, decoder: TokenDecoder, *, loss: str = "mse",
                 norm_pix: bool = True) -> None:
        super().__init__()
        if loss not in PIXEL_LOSSES:
            raise ValueError(f"unknown pixel loss {loss!r}; expected one of {PIXEL_LOSSES}")
        if decoder.out_dim != encoder.patch_embed.patch_dim or decoder.in_dim != encoder.embed_dim:
            raise ValueError("decoder does not match the encoder's width or patch size")
        self.encoder = encoder
        self.decoder = decoder
        self.loss_kind = loss
        self.norm_pix = norm_pix

    @classmethod
    def from_config(cls, cfg: Config, *, teacher_width: int | None = None,
                    num_classes: int | None = None) -> TeacherObjective:
        enc = build_model_encoder(cfg)
        dec = build_pixel_decoder(grid=token_grid(cfg), in_dim=enc.embed_dim, patch_size=cfg.model.patch_size,
                                  tubelet_size=cfg.model.tubelet_size, spec=cfg.decoder,
                                  use_rope=cfg.model.use_rope)
        return cls(enc, dec, loss=cfg.pixel_loss.kind, norm_pix=cfg.pixel_loss.norm_pix)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def exported_encoder(self) -> VideoViT:
        return self.encoder

    def step_flops(self, masks: Sequence[MaskBatch] | None, *, cached_targets: bool = False) -> StepFlops:
        enc = self.encoder
        return teacher_step_flops(enc.spec, self.decoder.spec, n_tokens=enc.num_tokens,
                                  patch_dim=enc.patch_embed.patch_dim, masks=mask_counts(masks))

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch], *,
                targets: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        """clips (B, C, T, H, W); loss averaged over the masks."""
        refuse_unused("teacher", targets=targets, labels=labels)
        masks = as_mask_list(masks)
        pe = self.encoder.patch_embed
        with torch.no_grad():
            targets = pixel_targets(clips, pe.patch_size, pe.tubelet_size, self.norm_pix)  # (B, N, P*C)
        losses, features = [], None
        for m in masks:
            z = self.encoder(clips, keep_idx=m.context_idx)  # (B, N_ctx, D)
            features = z.detach() if features is None else features
            pred = self.decoder(z, m.context_idx, m.pred_idx).float()  # (B, N_pred, P*C)
            target = gather_tokens(targets, m.pred_idx)  # (B, N_pred, P*C)
            losses.append(F.mse_loss(pred, target) if self.loss_kind == "mse" else F.l1_loss(pred, target))
        return average_losses(losses, masks, self.encoder.num_tokens, features)
