"""Context / predicted fractions of a mask generator over many draws (for the CLI and FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from salt.masks.factory import MaskGenerator


@dataclass(frozen=True)
class MaskStats:
    """Fractions of the N tokens; one draw = one batch (all its samples share the same counts)."""

    mask_index: int
    num_tokens: int
    ctx_mean: float
    ctx_min: float
    ctx_max: float
    pred_mean: float
    pred_min: float
    pred_max: float

    @property
    def mean_ctx_tokens(self) -> float:
        return self.ctx_mean * self.num_tokens

    @property
    def mean_pred_tokens(self) -> float:
        return self.pred_mean * self.num_tokens


def mask_stats(gen: MaskGenerator, *, num_draws: int, batch_size: int, seed: int) -> list[MaskStats]:
    """One MaskStats per mask the generator returns, over `num_draws` batches drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    n = gen.grid.num_tokens
    ctx: list[list[float]] = []
    pred: list[list[float]] = []
    for _ in range(num_draws):
        for i, m in enumerate(gen(batch_size, g)):
            if i == len(ctx):
                ctx.append([])
                pred.append([])
            ctx[i].append(m.context_idx.shape[1] / n)
            pred[i].append(m.pred_idx.shape[1] / n)
    return [MaskStats(i, n, sum(c) / len(c), min(c), max(c), sum(p) / len(p), min(p), max(p))
            for i, (c, p) in enumerate(zip(ctx, pred, strict=True))]
