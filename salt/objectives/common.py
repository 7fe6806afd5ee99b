"""What every objective returns, and small shared helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from salt.masks.batch import MaskBatch


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, with grad
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)  # 0-d tensors on the device (read
    # at log steps, never in forward: a read between forward and backward would stall a GPU) or host numbers
    features: torch.Tensor | None = None  # (B, K, D) the trained encoder's output on this batch, detached


def as_mask_list(masks: MaskBatch | Sequence[MaskBatch]) -> list[MaskBatch]:
    """Objectives average their loss over masks; a single MaskBatch is a list of one."""
    out = [masks] if isinstance(masks, MaskBatch) else list(masks)
    if not out:
        raise ValueError("need at least one MaskBatch")
    return out


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode. The owner must keep it in eval mode (see the objectives' train())."""
    module.requires_grad_(False)
    return module.eval()


def average_losses(losses: Sequence[torch.Tensor], masks: Sequence[MaskBatch], num_tokens: int,
                   features: torch.Tensor | None = None) -> ObjectiveOutput:
    """Mean over masks, with the mean and per-mask losses (device tensors) and context fractions (host
    numbers, from the masks' shapes) as metrics."""
    loss = torch.stack(list(losses)).mean()
    if loss.is_meta:  # shape-only run (FLOP counting on the meta device): nothing to read back
        return ObjectiveOutput(loss, {}, features)
    metrics: dict[str, torch.Tensor | float] = {"loss": loss.detach().float()}
    for i, (v, m) in enumerate(zip(losses, masks, strict=True)):
        metrics[f"loss_mask{i}"] = v.detach().float()
        metrics[f"ctx_frac_mask{i}"] = m.context_idx.shape[1] / num_tokens
    return ObjectiveOutput(loss, metrics, features)
