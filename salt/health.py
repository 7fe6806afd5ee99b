"""Representation health on a training batch: is the encoder collapsing?

Both read the trained encoder's token features of the current batch, so a collapsing run shows in
metrics.jsonl long before any probe is trained:

- feature_std: the standard deviation across samples of the L2-normalised, token-pooled features,
  averaged over channels. A collapsed encoder (one output for every clip) gives 0; features spread
  evenly over the sphere give about 1/sqrt(D).
- rankme: the effective rank of the token features (Garrido et al., RankMe): exp of the entropy of the
  normalised singular values. 1 when every token maps to one direction, at most min(rows, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def feature_std(features: torch.Tensor) -> torch.Tensor:
    """features (B, K, D) -> () std over B of the normalised mean over K, averaged over D (NaN for B < 2)."""
    pooled = F.normalize(features.float().mean(1), dim=-1)  # (B, D)
    if pooled.shape[0] < 2:
        return torch.full((), float("nan"), device=features.device)
    return pooled.std(0).mean()


@torch.no_grad()
def rankme(features: torch.Tensor, max_rows: int = 4096, eps: float = 1e-7) -> torch.Tensor:
    """features (B, K, D) -> () effective rank of the (B * K, D) token matrix (an even subsample of at most
    max_rows rows)."""
    x = features.float().flatten(0, 1)  # (B * K, D)
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows, device=x.device).long()]
    s = torch.linalg.svdvals(x)
    p = s / (s.sum() + eps) + eps
    return torch.exp(-(p * p.log()).sum())


def health_metrics(features: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Both, as 0-d tensors on the features' device (read by the caller with its other metrics)."""
    if features is None or features.is_meta:
        return {}
    return {"feature_std": feature_std(features), "rankme": rankme(features)}
