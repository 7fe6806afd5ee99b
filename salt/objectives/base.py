"""The interface every training stage implements; the trainer and the FLOP accounting see only this.

A stage is one subclass (its loss, the encoder it exports, its per-step hook, its extra checkpoint
state, its step FLOPs and how it is built from the run config) plus one line in `salt/stages.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from salt.masks.batch import MaskBatch
from salt.models.encoder import VideoViT
from salt.objectives.common import ObjectiveOutput

if TYPE_CHECKING:
    from salt.config import Config
    from salt.flops import StepFlops


class Objective(nn.Module):
    uses_masks: ClassVar[bool] = True  # False: the stage reads whole clips and the loader draws no masks
    needs_labels: ClassVar[bool] = False  # True: the trainer passes each batch's class labels
    uses_teacher: ClassVar[bool] = False  # True: a frozen teacher (or a cache of its targets) feeds the loss
    needs_full_parameters: ClassVar[bool] = False  # True: a per-step hook reads whole weights (not ZeRO 3)

    @classmethod
    def from_config(cls, cfg: Config, *, teacher_width: int | None = None,
                    num_classes: int | None = None) -> Objective:
        """teacher_width: the target width when training from a cache (no teacher loaded);
        num_classes: the labelled shard set's, for stages that read labels."""
        raise NotImplementedError

    def trainable_modules(self) -> list[nn.Module]:
        """What the optimizer updates and DeepSpeed wraps; anything else is frozen."""
        raise NotImplementedError

    def exported_encoder(self) -> VideoViT:
        """The encoder this stage trains: exported at each checkpoint and probed."""
        raise NotImplementedError

    def step_flops(self, masks: Sequence[MaskBatch] | None, *, cached_targets: bool = False) -> StepFlops:
        """Per-clip model FLOPs of one training step on this batch's masks (see salt/flops.py)."""
        raise NotImplementedError

    def forward(self, clips: torch.Tensor, masks: MaskBatch | Sequence[MaskBatch] | None, *,
                targets: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        """clips (B, C, T, H, W); targets (B, N, D) precomputed teacher targets; labels (B,) long."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step with the step just taken (0-based) and the run's length."""

    def extra_state(self) -> dict[str, Any]:
        """State outside the trained modules that a checkpoint must keep (an EMA target)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restores what extra_state() returned."""


def refuse_unused(stage: str, *, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> None:
    """Stages that take neither cached targets nor labels say so rather than ignore them."""
    if targets is not None:
        raise ValueError(f"the {stage} stage does not take precomputed targets")
    if labels is not None:
        raise ValueError(f"the {stage} stage does not take labels")
