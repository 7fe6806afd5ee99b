"""Token features of a frozen encoder over a loader's batches, kept in memory for probe training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from salt.data.batch import VideoBatch


@dataclass
class FeatureSet:
    tokens: torch.Tensor  # (S, V, N, D) float16: S samples, V views each
    labels: torch.Tensor  # (S,) long

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]


@torch.no_grad()
def extract_features(encoder: nn.Module, batches: Iterable[VideoBatch], views: int, device: torch.device,
                     dtype: torch.dtype | None = torch.bfloat16) -> FeatureSet:
    """Runs the frozen encoder (eval mode, no grad) on every view of every real sample; a batch holds
    `views` views per sample, view-major."""
    encoder.eval()
    feats, labels = [], []
    for batch in batches:
        b = batch.video.shape[0] // views
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z = encoder(batch.video.to(device))  # (V * B, N, D)
        z = z.float().unflatten(0, (views, b)).transpose(0, 1)  # (B, V, N, D)
        feats.append(z[:batch.valid].half().cpu())
        labels.append(batch.labels[:batch.valid])
    return FeatureSet(torch.cat(feats), torch.cat(labels))
