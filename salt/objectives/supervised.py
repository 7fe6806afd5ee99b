"""The ceiling: the same encoder with an attentive classifier, trained end to end on the labels.

It reads whole clips (no masks) and is trained, accounted and exported like every other stage, so a
probe of its encoder is the best the architecture reaches on the task at the same budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salt.build import build_model_encoder
from salt.config import Config, ConfigError
from salt.flops import StepFlops, supervised_step_flops
from salt.models.attentive_pool import AttentiveProbe
from salt.models.encoder import VideoViT
from salt.objectives.base import Objective, refuse_unused
from salt.objectives.common import ObjectiveOutput


class SupervisedObjective(Objective):
    uses_masks = False
    needs_labels = True

    def __init__(self, encoder: VideoViT, head: AttentiveProbe, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if head.dim != encoder.embed_dim:
            raise ValueError(f"classifier width {head.dim} != encoder width {encoder.embed_dim}")
        self.encoder = encoder
        self.head = head
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, cfg: Config, *, teacher_width: int | None = None,
                    num_classes: int | None = None) -> SupervisedObjective:
        if not num_classes or num_classes < 2:
            raise ConfigError("the supervised stage needs labelled shards (at least 2 classes in manifest.json)")
        enc = build_model_encoder(cfg)
        return cls(enc, AttentiveProbe(enc.embed_dim, num_classes), label_smoothing=cfg.supervised.label_smoothing)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.head]

    def exported_encoder(self) -> VideoViT:
        return self.encoder

    def step_flops(self, masks: object = None, *, cached_targets: bool = False) -> StepFlops:
        enc, head = self.encoder, self.head
        return supervised_step_flops(enc.spec, n_tokens=enc.num_tokens, patch_dim=enc.patch_embed.patch_dim,
                                     num_classes=head.num_classes, head_mlp_hidden=int(head.dim * head.mlp_ratio))

    def forward(self, clips: torch.Tensor, masks: object = None, *, targets: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> ObjectiveOutput:
        """clips (B, C, T, H, W), labels (B,) long in [0, num_classes); masks are ignored (whole clips)."""
        refuse_unused("supervised", targets=targets)
        if labels is None:
            raise ValueError("the supervised stage needs labels")
        z = self.encoder(clips)  # (B, N, D)
        logits = self.head(z).float()  # (B, classes)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if loss.is_meta:
            return ObjectiveOutput(loss, {}, z.detach())
        acc = (logits.detach().argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "train_top1": acc}, z.detach())
