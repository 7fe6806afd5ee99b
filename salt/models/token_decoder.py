"""TokenDecoder: the narrow transformer behind both the latent predictor and the pixel decoder.

Context features are projected to the decoder width and get their positions added; a learned mask
token plus position is placed at every position to predict; after the blocks and a norm, only the
predicted positions go through the output head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from salt.masks.gather import gather_tokens
from salt.masks.grid import TokenGrid
from salt.models.blocks import LayerNorm, init_weights, make_blocks, run_blocks
from salt.models.pos_embed import sincos_3d
from salt.models.rope import rope_tables


@dataclass(frozen=True)
class DecoderSpec:
    """A narrow transformer on top of the encoder: the predictor or the pixel decoder (a config node too)."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.width * self.mlp_ratio)


class TokenDecoder(nn.Module):
    def __init__(self, *, grid: TokenGrid, in_dim: int, out_dim: int, spec: DecoderSpec, embed_bias: bool = True,
                 use_rope: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        if spec.width % spec.heads:
            raise ValueError(f"width {spec.width} is not divisible by heads {spec.heads}")
        self.grid = grid
        self.spec = spec
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.use_rope = use_rope
        self.embed = nn.Linear(in_dim, spec.width, bias=embed_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.register_buffer("pos_embed", None if use_rope else sincos_3d(spec.width, grid),
                             persistent=False)  # (N, W)
        self.blocks = make_blocks(dim=spec.width, depth=spec.depth, num_heads=spec.heads,
                                  mlp_ratio=spec.mlp_ratio, drop_path=drop_path, use_rope=use_rope)
        self.norm = LayerNorm(spec.width)
        self.head = nn.Linear(spec.width, out_dim)
        self.grad_checkpointing = False
        init_weights(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, ctx: torch.Tensor, ctx_idx: torch.Tensor, pred_idx: torch.Tensor) -> torch.Tensor:
        """ctx (B, N_ctx, in_dim) at ctx_idx (B, N_ctx); pred_idx (B, N_pred) -> (B, N_pred, out_dim)."""
        B, n_ctx, _ = ctx.shape
        x = self.embed(ctx)  # (B, N_ctx, W)
        m = self.mask_token.to(x.dtype).expand(B, pred_idx.shape[1], -1)  # (B, N_pred, W)
        idx = torch.cat([ctx_idx, pred_idx], dim=1)  # (B, N_ctx + N_pred)
        x = torch.cat([x, m], dim=1)  # (B, N_ctx + N_pred, W)
        rope = None
        if self.use_rope:
            coords = self.grid.coords(x.device).unsqueeze(0).expand(B, -1, -1)  # (B, N, 3)
            rope = rope_tables(gather_tokens(coords, idx), self.spec.width // self.spec.heads)
        else:
            pos = self.pos_embed.to(x.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, N, W)
            x = x + gather_tokens(pos, idx)
        x, _ = run_blocks(self.blocks, x, rope=rope, checkpointing=self.grad_checkpointing)
        return self.head(self.norm(x[:, n_ctx:]))  # (B, N_pred, out_dim)
