"""Stage 2: a student predicts a frozen teacher's layer-normed latents at masked positions (L1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salt.build import build_model_encoder, load_teacher, token_grid
from salt.config import Config, ConfigError
from salt.flops import StepFlops, mask_counts, student_step_flops
from salt.masks.batch import MaskBatch
from salt.models import build_predictor
from salt.models.encoder import VideoViT
from salt.models.token_decoder import TokenDecoder
from salt.objectives.base import Objective, refuse_unused
from salt.objectives.common import ObjectiveOutput, as_mask_list, average_losses, freeze
from salt.objectives.latent import compute_teacher_targets, latent_prediction_losses
from salt.precision import torch_dtype


class StudentObjective(Objective):
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

    uses_teacher = True

    @classmethod
    def from_config(cls, cfg: Config, *, teacher_width: int | None = None,
                    num_classes: int | None = None) -> StudentObjective:
        """Without cfg.targets.cache the teacher is loaded from cfg.teacher.path; with one, `teacher_width`
        is the cache's target width and no teacher is loaded."""
        student = build_model_encoder(cfg)
        teacher = None
        if not cfg.targets.cache:
            teacher, _ = load_teacher(cfg)
            teacher_width = teacher.embed_dim
        if teacher_width is None:
            raise ConfigError("student stage from a target cache needs the cache's target width")
        pred = build_predictor(grid=token_grid(cfg), in_dim=student.embed_dim, out_dim=teacher_width,
                               spec=cfg.predictor, use_rope=cfg.model.use_rope)
        dtype = None if cfg.teacher.dtype == "fp32" else torch_dtype(cfg.teacher.dtype)
        return cls(student, pred, teacher, teacher_dtype=dtype)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.predictor]

    def exported_encoder(self) -> VideoViT:
        return self.student

    def step_flops(self, masks: Sequence[MaskBatch] | None, *, cached_targets: bool = False) -> StepFlops:
        """cached_targets: the step got precomputed targets (the teacher's forward is free)."""
        st = self.student
        teacher = None if cached_targets or self.teacher is None else self.teacher.spec
        return student_step_flops(st.spec, self.predictor.spec, teacher, target_dim=self.predictor.out_dim,
                                  n_tokens=st.num_tokens, patch_dim=st.patch_embed.patch_dim,
                                  masks=mask_counts(masks))

    def train(self, mode: bool = True) -> StudentObjective:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch], *,
                targets: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        """clips (B, C, T, H, W); targets (B, N, D_teacher) from compute_teacher_targets, or None to run
        the teacher here. Loss averaged over the masks."""
        refuse_unused("student", labels=labels)
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
