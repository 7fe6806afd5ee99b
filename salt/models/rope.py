"""3D rotary position embedding, V-JEPA 2's function exactly, on top of timm's Block and Attention.

The head dim is split into three equal even chunks of 2 * ((head_dim // 3) // 2) channels, rotated by the
token's t, h and w position; any remainder channels are left as they are. Within a chunk of D channels,
frequency i is 1 / 10000 ** (i / (D / 2)) for i < D / 2, laid out twice over the chunk (V-JEPA 2's
`freq.repeat(..., 2)`: channel c uses frequency c mod D/2), while channel pairs (2i, 2i + 1) are the ones
that mix ((x_2i, x_2i+1) -> (-x_2i+1, x_2i) times the sine). It is what transformers' VJEPA2Model computes
(`rotate_queries_or_keys`), so a salt RoPE encoder exports to it unchanged (salt.models.hf); the test is
equality. Parameters are identical to timm's Block, so a RoPE model and an absolute-position model have
the same state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block


def rope_tables(coords: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """coords (B, N, 3) (t, h, w) -> cos, sin, each (B, 1, N, head_dim), broadcast over heads."""
    chunk = 2 * ((head_dim // 3) // 2)
    if chunk == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D RoPE")
    omega = 1.0 / theta ** (torch.arange(chunk // 2, device=coords.device, dtype=torch.float32) / (chunk // 2))
    angles = coords.float().unsqueeze(-1) * omega  # (B, N, 3, chunk/2)
    angles = torch.cat([angles, angles], dim=-1).flatten(2)  # (B, N, 3*chunk): each chunk's frequencies, twice
    rest = head_dim - 3 * chunk
    cos = F.pad(angles.cos(), (0, rest), value=1.0)  # (B, N, head_dim)
    sin = F.pad(angles.sin(), (0, rest), value=0.0)
    return cos.unsqueeze(1), sin.unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, N, head_dim): rotate each channel pair (2i, 2i+1) by its angle."""
    pairs = x.unflatten(-1, (-1, 2))  # (B, h, N, hd/2, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (B, h, N, hd)
    return (x * cos + rotated * sin).to(x.dtype)


def project_qkv(attn: Attention, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, N, D) through a timm Attention's projections: q, k (normed, rotated when `rope` is given) and v,
    each (B, heads, N, head_dim)."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    return q, k, v


class RopeAttention(Attention):
    """timm Attention with RoPE applied to q and k; always uses F.scaled_dot_product_attention."""

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # type: ignore[override]
                attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = project_qkv(self, x, rope)  # (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(x))


class RopeBlock(Block):
    """timm Block whose attention takes the RoPE tables of the tokens it sees."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 norm_layer: type[torch.nn.Module]) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path,
                         norm_layer=norm_layer, attn_layer=RopeAttention)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), rope=rope)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
