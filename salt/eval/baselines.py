"""Baselines that need no encoder, read by the same probes as an encoder's features.

- pixels: the clip itself, each frame average-pooled to `side x side`, flattened;
- frame-diff: the differences of consecutive frames, pooled the same way: motion with the appearance
  taken out. On a motion task an encoder below this is not yet an encoder.

Each returns one token per clip, (B, 1, D), so the attentive probe, the linear probe and k-NN take it as
they take an encoder's tokens (a one-token attentive probe is an MLP on the vector).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASELINES = ("pixels", "frame-diff")


class PixelBaseline(nn.Module):
    def __init__(self, kind: str, side: int = 8) -> None:
        super().__init__()
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
        self.kind, self.side = kind, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T, H, W) normalised clips -> (B, 1, D) with D = C * T' * side * side."""
        if self.kind == "frame-diff":
            x = x[:, :, 1:] - x[:, :, :-1]  # (B, C, T - 1, H, W)
        x = F.adaptive_avg_pool3d(x.float(), (x.shape[2], self.side, self.side))  # (B, C, T', side, side)
        return x.flatten(1).unsqueeze(1)
