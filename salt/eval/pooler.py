"""V-JEPA's frozen-evaluation head: a learned query cross-attends over the encoder's tokens (timm's
AttentionPoolLatent: query, cross-attention, MLP), then a linear classifier."""

from __future__ import annotations

import torch
from timm.layers import AttentionPoolLatent
from torch import nn


class AttentiveProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        heads = num_heads if dim % num_heads == 0 else 1
        self.norm = nn.LayerNorm(dim)
        self.pool = AttentionPoolLatent(dim, num_heads=heads, mlp_ratio=mlp_ratio, norm_layer=nn.LayerNorm)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) → logits (B, num_classes)."""
        return self.head(self.pool(self.norm(tokens)))
