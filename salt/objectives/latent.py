"""Latent targets and the latent prediction loss shared by the SALT student and the V-JEPA baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from salt.masks.batch import MaskBatch
from salt.masks.gather import gather_tokens
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder


@torch.no_grad()
def compute_teacher_targets(teacher: VideoViT, clips: torch.Tensor) -> torch.Tensor:
    """Full-clip targets (B, N, D_teacher), float32: the teacher's features layer-normed over the feature
    dim without affine (V-JEPA). Pure given the teacher's weights: a target cache stores exactly this,
    and StudentObjective(targets=...) then gives the same loss as the online teacher."""
    if teacher.training:
        raise RuntimeError("the teacher must be in eval mode")
    dtype = next(teacher.parameters()).dtype
    h = teacher(clips.to(dtype)).float()  # (B, N, D)
    return F.layer_norm(h, (h.shape[-1],))


def latent_prediction_losses(encoder: VideoViT, predictor: TokenDecoder, clips: torch.Tensor,
                             masks: Sequence[MaskBatch], targets: torch.Tensor
                             ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per mask: encode the context, predict the targets at the predicted positions, L1 loss. Also
    returns the first mask's context features (B, N_ctx, D_student), detached, for health metrics."""
    losses, features = [], None
    for m in masks:
        z = encoder(clips, keep_idx=m.context_idx)  # (B, N_ctx, D_student)
        features = z.detach() if features is None else features
        pred = predictor(z, m.context_idx, m.pred_idx)  # (B, N_pred, D_teacher)
        target = gather_tokens(targets, m.pred_idx)  # (B, N_pred, D_teacher)
        losses.append(F.l1_loss(pred.float(), target.float()))
    return losses, features
