"""Stage 2: a student predicts a frozen teacher's layer-normed latents at masked positions (L1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salt.masks.batch import MaskBatch
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder
from salt.objectives.common import ObjectiveOutput, as_mask_list, average_losses, freeze
from salt.objectives.latent import compute_teacher_targets, latent_prediction_losses


class StudentObjective(nn.Module):
    """Student encoder over the context -> predictor -> teacher targets at the predicted positions.

    The teacher is frozen (eval mode, no grad, never in trainable_modules, kept in eval by train()).
    It may be None when every batch brings precomputed `targets` (a teacher-target cache).
    """

    def __init__(self, student: VideoViT, predictor: TokenDecoder, teacher: VideoViT | None, *,
                 teacher_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if predictor.in_dim != student.embed_dim:
            raise ValueError(f"predictor in_dim {predictor.in_dim} != student width {student.embed_dim}")
        if teacher is not None:
            if predictor.out_dim != teacher.embed_dim:
                raise ValueError(f"predictor out_dim {predictor.out_dim} != teacher width {teacher.embed_dim}")
            if teacher.grid != student.grid:
                raise ValueError(f"teacher grid {teacher.grid} != student grid {student.grid}")
            freeze(teacher)
            if teacher_dtype is not None:
                teacher.to(teacher_dtype)
        self.student = student
        self.predictor = predictor
        self.teacher = teacher

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.predictor]

    def train(self, mode: bool = True) -> StudentObjective:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch],
                targets: torch.Tensor | None = None) -> ObjectiveOutput:
        """clips (B, C, T, H, W); targets (B, N, D_teacher) from compute_teacher_targets, or None to run
        the teacher here. Loss averaged over the masks."""
        masks = as_mask_list(masks)
        if targets is None:
            if self.teacher is None:
                raise ValueError("no teacher: pass precomputed targets")
            targets = compute_teacher_targets(self.teacher, clips)  # (B, N, D_teacher)
        elif targets.shape[1] != self.student.num_tokens or targets.shape[2] != self.predictor.out_dim:
            raise ValueError(f"targets {tuple(targets.shape)} do not match ({self.student.num_tokens} tokens, "
                             f"width {self.predictor.out_dim})")
        losses, features = latent_prediction_losses(self.student, self.predictor, clips, masks, targets)
        return average_losses(losses, masks, self.student.num_tokens, features)
