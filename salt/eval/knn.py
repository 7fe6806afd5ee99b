"""The training-free probe: weighted k-nearest neighbours on pooled, L2-normalised features (DINO's
k-NN classifier: cosine similarity, votes weighted by exp(similarity / temperature)).

It has no parameters and no seed, so it cannot underfit or overfit the way a trained probe can; beside
the attentive probe it shows whether a difference lies in the features or in the probe's training.

`standardize=True` first scales every pooled dimension to zero mean and unit variance over the bank (the
training views): otherwise a few high-variance dimensions (a random encoder's position channels, say)
decide every cosine similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salt.eval.features import FeatureSet, to_device


def pooled(features: FeatureSet, device: torch.device | None = None, chunk: int = 256) -> torch.Tensor:
    """(S, V, N, D) tokens -> (S, V, D) mean over tokens, float32, on `device` (pooled there, in chunks)."""
    device = device or torch.device("cpu")
    parts = [to_device(t, device).float().mean(2) for t in features.tokens.split(chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, *features.tokens.shape[1:2], features.tokens.shape[-1])


def knn_correct(train: FeatureSet, val: FeatureSet, num_classes: int, *, k: int = 20,
                temperature: float = 0.07, standardize: bool = False,
                device: torch.device | None = None) -> torch.Tensor:
    """(S_val,) bool (on the CPU): whether each validation sample's k-NN vote is its label, computed on
    `device`. Every training view is one neighbour candidate; a validation sample's views are averaged
    before normalising. standardize: per-dimension z-scores with the bank's mean and std first."""
    device = device or torch.device("cpu")
    bank = pooled(train, device).flatten(0, 1)  # (S * V, D)
    query = pooled(val, device).mean(1)  # (S_val, D)
    if standardize:
        mean, std = bank.mean(0), bank.std(0).clamp_min(1e-6)  # (D,)
        bank, query = (bank - mean) / std, (query - mean) / std
    bank, query = F.normalize(bank, dim=-1), F.normalize(query, dim=-1)
    bank_labels = train.labels.repeat_interleave(train.tokens.shape[1]).to(device)  # (S * V,)
    k = min(k, len(bank))
    out = []
    for chunk in query.split(1024):
        sim, idx = (chunk @ bank.T).topk(k, dim=-1)  # (b, k)
        votes = torch.zeros(len(chunk), num_classes, device=device).scatter_add_(1, bank_labels[idx],
                                                                                 (sim / temperature).exp())
        out.append(votes.argmax(-1))
    return torch.cat(out).cpu() == val.labels
