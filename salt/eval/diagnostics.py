"""What a frozen encoder's features look like, beyond a probe's accuracy: where training loses them.

On a fixed set of clips (the same at every checkpoint):
- feature_std: per-dimension std across clips of the mean-pooled (not normalised) features, averaged
  over dimensions; dim_std_min/max the spread of that std over dimensions;
- rankme: effective rank of the token matrix (salt.health);
- token_cosine: mean cosine similarity between two tokens of one clip (1: every token alike);
- clip_cosine: mean cosine similarity between the pooled features of two clips (1: every clip alike);
- attn_entropy_<i>: mean entropy (nats) of block i's attention rows, over heads and queries; its maximum
  is ln N (uniform attention);
- resid_norm_<i>: mean L2 norm of a token's residual stream after block i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salt.health import rankme


def _mean_offdiag(sim: torch.Tensor) -> torch.Tensor:
    """sim (..., n, n) -> (...) mean of the off-diagonal entries."""
    n = sim.shape[-1]
    return (sim.sum((-1, -2)) - sim.diagonal(dim1=-2, dim2=-1).sum(-1)) / max(1, n * (n - 1))


@torch.no_grad()
def attention_entropy(block: nn.Module, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """x (B, N, D): the block's input. Recomputes its attention weights (timm's Attention layout)."""
    from salt.models.rope import project_qkv

    q, k, _ = project_qkv(block.attn, block.norm1(x), rope)  # (B, heads, N, head_dim)
    p = ((q.float() @ k.float().transpose(-1, -2)) * block.attn.scale).softmax(-1)  # (B, heads, N, N)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


@torch.no_grad()
def feature_diagnostics(encoder: nn.Module, clips: torch.Tensor) -> dict[str, float]:
    """encoder: a salt VideoViT; clips (B, C, T, H, W) on the encoder's device, B >= 2."""
    from salt.models.pos_embed import sincos_3d
    from salt.models.rope import rope_tables

    was_training = encoder.training
    encoder.eval()
    try:
        grid = encoder._input_grid(clips)
        x = encoder.patch_embed(clips.float())  # (B, N, D)
        rope = None
        if encoder.use_rope:
            rope = rope_tables(grid.coords(x.device).unsqueeze(0), encoder.spec.head_dim)
        else:
            pos = encoder.pos_embed if grid == encoder.grid else sincos_3d(encoder.embed_dim, grid, x.device).unsqueeze(0)
            x = x + pos.to(x.dtype)
        out: dict[str, float] = {}
        for i, blk in enumerate(encoder.blocks):
            out[f"attn_entropy_{i}"] = attention_entropy(blk, x, rope)
            x = blk(x) if rope is None else blk(x, rope)
            out[f"resid_norm_{i}"] = float(x.float().norm(dim=-1).mean())
        z = encoder.norm(x).float()  # (B, N, D)
    finally:
        encoder.train(was_training)
    pooled = z.mean(1)  # (B, D)
    dim_std = pooled.std(0)  # (D,)
    tokens = F.normalize(z, dim=-1)
    clips_n = F.normalize(pooled, dim=-1)
    out.update({"feature_std": float(dim_std.mean()), "dim_std_min": float(dim_std.min()),
                "dim_std_max": float(dim_std.max()), "rankme": float(rankme(z)),
                "token_cosine": float(_mean_offdiag(tokens @ tokens.transpose(1, 2)).mean()),
                "clip_cosine": float(_mean_offdiag(clips_n @ clips_n.T))})
    return out
