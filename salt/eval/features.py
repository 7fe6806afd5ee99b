"""Token features of a frozen encoder over a loader's batches, kept in memory for probe training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from salt.data.batch import VideoBatch


@dataclass
class FeatureSet:
    tokens: torch.Tensor  # (S, V, N, D) float16: S samples, V views each
    labels: torch.Tensor  # (S,) long
    keys: list[str] = field(default_factory=list)  # (S,) source sample of each row (a video may fill several)

    def select(self, rows: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.tokens[rows], self.labels[rows], [self.keys[i] for i in rows.tolist()]
                          if self.keys else [])

    @staticmethod
    def cat(sets: list[FeatureSet]) -> FeatureSet:
        """The sets one after another (pinned when they all are)."""
        tokens = torch.cat([s.tokens for s in sets])
        if sets and all(s.tokens.is_pinned() for s in sets):
            tokens = tokens.pin_memory()
        return FeatureSet(tokens, torch.cat([s.labels for s in sets]), [k for s in sets for k in s.keys])

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Stored (host) features on `device`: through page-locked memory, asynchronously, for a GPU (torch's
    caching host allocator reuses the pinned blocks)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def feature_dtype(device: torch.device) -> torch.dtype | None:
    """The encoder's autocast dtype for feature extraction: bf16 where it is native, else fp32 (None)."""
    from salt.precision import resolve_precision

    return resolve_precision("auto", device, torch.bfloat16).autocast


@torch.no_grad()
def extract_features(encoder: nn.Module, batches: Iterable[VideoBatch], views: int, device: torch.device,
                     dtype: torch.dtype | None | str = "auto") -> FeatureSet:
    """Runs the frozen encoder (eval mode, no grad) on every view of every real sample; a batch holds
    `views` views per sample, view-major. dtype: autocast dtype ("auto": bf16 where native, else fp32).
    For a GPU the stored features are pinned, so the probe's batches go there asynchronously."""
    encoder.eval()
    dtype = feature_dtype(device) if dtype == "auto" else dtype
    feats, labels, keys = [], [], []
    for batch in batches:
        b = batch.video.shape[0] // views
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z = encoder(batch.model_input(device))  # (V * B, N, D)
        z = z.float().unflatten(0, (views, b)).transpose(0, 1)  # (B, V, N, D)
        feats.append(z[:batch.valid].half().cpu())
        labels.append(batch.labels[:batch.valid])  # view 0's; evaluation views are never flipped
        keys += batch.keys[:batch.valid]
    tokens = torch.cat(feats)
    return FeatureSet(tokens.pin_memory() if device.type == "cuda" else tokens, torch.cat(labels), keys)
