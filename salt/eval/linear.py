"""MAE's linear probe: a BatchNorm without affine parameters in front of one linear layer, trained on the
mean-pooled frozen features.

The BatchNorm standardises each feature dimension over the training set, so the probe's optimiser sees
unit-scale inputs whatever the encoder's feature scale (MAE, He et al. 2022, appendix: "BatchNorm
without affine transformation before the linear classifier"). MAE trains it with LARS at batch 16384; on a
few hundred clips SGD with momentum and a cosine schedule is the same protocol at this size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from salt.eval.features import FeatureSet
from salt.eval.knn import pooled


@dataclass(frozen=True)
class LinearSettings:
    epochs: int = 100
    lr: float = 0.1  # SGD with momentum 0.9; cosine to 0 over the epochs
    weight_decay: float = 0.0  # MAE's linear probe uses none
    batch_size: int = 64


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


class LinearProbe(nn.Module):
    """(E, D) pooled features -> (E, classes) logits."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


def linear_probe_correct(train: FeatureSet, val: FeatureSet, num_classes: int, *, seeds: int = 1, seed: int = 0,
                         settings: LinearSettings | None = None, device: torch.device | None = None
                         ) -> tuple[torch.Tensor, list[float]]:
    """((seeds, S_val) bool, per-seed training top-1): each training view one example; a validation sample's
    softmax averaged over its views."""
    s = settings or LinearSettings()
    device = device or torch.device("cpu")
    x = pooled(train, device).flatten(0, 1)  # (S * V, D)
    y = train.labels.repeat_interleave(train.tokens.shape[1]).to(device)  # (S * V,)
    xv = pooled(val, device)  # (S_val, V', D)
    correct, train_top1 = [], []
    for k in range(seeds):
        g = torch.Generator().manual_seed(seed + k)
        torch.manual_seed(seed + k)
        probe = LinearProbe(x.shape[-1], num_classes).to(device)
        opt = torch.optim.SGD(probe.parameters(), lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(_cosine, total=s.epochs * math.ceil(len(x) / s.batch_size)))
        probe.train()
        for _ in range(s.epochs):
            for idx in torch.randperm(len(x), generator=g).split(s.batch_size):
                if len(idx) < 2:  # BatchNorm needs two rows in training mode
                    continue
                idx = idx.to(device)
                loss = F.cross_entropy(probe(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        probe.eval()
        with torch.no_grad():
            pred = probe(xv.flatten(0, 1)).unflatten(0, xv.shape[:2]).softmax(-1).mean(1).argmax(-1)  # (S_val,)
            correct.append(pred.cpu() == val.labels)
            fit = probe(x).argmax(-1) == y
            train_top1.append(float(fit.float().mean()))
    return torch.stack(correct), train_top1
