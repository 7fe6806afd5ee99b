"""The one gather helper: select tokens by index."""

from __future__ import annotations

import torch


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, K) long -> (B, K, D) with out[b, k] = x[b, idx[b, k]]."""
    if idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx {tuple(idx.shape)} does not index a batch of {tuple(x.shape)}")
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
