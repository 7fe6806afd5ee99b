"""The training-free probe: weighted k-nearest neighbours on pooled, L2-normalised features (DINO's
k-NN classifier: cosine similarity, votes weighted by exp(similarity / temperature)).

It has no parameters and no seed, so it cannot underfit or overfit the way a trained probe can; beside
the attentive probe it shows whether a difference lies in the features or in the probe's training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salt.eval.features import FeatureSet


def pooled(features: FeatureSet) -> torch.Tensor:
    """(S, V, N, D) tokens -> (S, V, D) mean over tokens, float32."""
    return features.tokens.float().mean(2)


def knn_correct(train: FeatureSet, val: FeatureSet, num_classes: int, *, k: int = 20,
                temperature: float = 0.07) -> torch.Tensor:
    """(S_val,) bool: whether each validation sample's k-NN vote is its label. Every training view is
    one neighbour candidate; a validation sample's views are averaged before normalising."""
    bank = F.normalize(pooled(train).flatten(0, 1), dim=-1)  # (S * V, D)
    bank_labels = train.labels.repeat_interleave(train.tokens.shape[1])  # (S * V,)
    query = F.normalize(pooled(val).mean(1), dim=-1)  # (S_val, D)
    k = min(k, len(bank))
    out = []
    for chunk in query.split(1024):
        sim, idx = (chunk @ bank.T).topk(k, dim=-1)  # (b, k)
        votes = torch.zeros(len(chunk), num_classes).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(-1))
    return torch.cat(out) == val.labels
