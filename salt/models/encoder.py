"""VideoViT: 3D patch embedding + fixed sin-cos (or RoPE) positions + timm blocks + final norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salt.masks.gather import gather_tokens
from salt.masks.grid import TokenGrid
from salt.models.blocks import LayerNorm, init_weights, make_blocks, run_blocks
from salt.models.patch_embed import PatchEmbed3D
from salt.models.pos_embed import sincos_3d
from salt.models.rope import rope_tables
from salt.models.sizes import EncoderSpec, get_spec


class VideoViT(nn.Module):
    """Clip (B, C, T, H, W) -> token features (B, N, D), optionally only at kept token indices."""

    def __init__(self, *, spec: EncoderSpec, img_size: int, num_frames: int, patch_size: int = 16,
                 tubelet_size: int = 2, in_chans: int = 3, drop_path: float = 0.0, use_rope: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.embed_dim = spec.embed_dim
        self.use_rope = use_rope
        self.grid = TokenGrid.from_clip(num_frames=num_frames, img_size=img_size, patch_size=patch_size,
                                        tubelet_size=tubelet_size)
        self.patch_embed = PatchEmbed3D(in_chans=in_chans, embed_dim=spec.embed_dim, patch_size=patch_size,
                                        tubelet_size=tubelet_size)
        # Fixed, so not a parameter and not saved; recomputed for clips of another geometry.
        self.register_buffer("pos_embed", None if use_rope else sincos_3d(spec.embed_dim, self.grid).unsqueeze(0),
                             persistent=False)  # (1, N, D)
        self.blocks = make_blocks(dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
                                  mlp_ratio=spec.mlp_ratio, drop_path=drop_path, use_rope=use_rope)
        self.norm = LayerNorm(spec.embed_dim)
        self.grad_checkpointing = False
        init_weights(self, self.blocks)

    @property
    def num_tokens(self) -> int:
        return self.grid.num_tokens

    def reset_fixed_buffers(self, device: torch.device) -> None:
        """Recomputes the buffers that are not saved (the sincos position table) on `device`: a model built
        on the meta device and loaded from a file has every tensor but these."""
        if self.pos_embed is not None:
            self.pos_embed = sincos_3d(self.embed_dim, self.grid, device).unsqueeze(0)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _input_grid(self, x: torch.Tensor) -> TokenGrid:
        if x.dim() != 5 or x.shape[1] != self.patch_embed.in_chans:
            raise ValueError(f"expected clips (B, {self.patch_embed.in_chans}, T, H, W), got {tuple(x.shape)}")
        pe = self.patch_embed
        return TokenGrid(x.shape[2] // pe.tubelet_size, x.shape[3] // pe.patch_size, x.shape[4] // pe.patch_size)

    def _run(self, x: torch.Tensor, keep_idx: torch.Tensor | None,
             collect: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        grid = self._input_grid(x)
        x = self.patch_embed(x)  # (B, N, D)
        rope = None
        if self.use_rope:
            coords = grid.coords(x.device).unsqueeze(0)  # (1, N, 3)
            if keep_idx is not None:
                coords = gather_tokens(coords.expand(x.shape[0], -1, -1), keep_idx)  # (B, K, 3)
            rope = rope_tables(coords, self.spec.head_dim)
        else:
            pos = self.pos_embed if grid == self.grid else sincos_3d(self.embed_dim, grid, x.device).unsqueeze(0)
            x = x + pos.to(x.dtype)
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx)  # (B, K, D)
        return run_blocks(self.blocks, x, rope=rope, checkpointing=self.grad_checkpointing, collect=collect)

    def forward(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, H, W), keep_idx (B, K) long or None -> normed features (B, K or N, D)."""
        out, _ = self._run(x, keep_idx, ())
        return self.norm(out)

    def forward_layers(self, x: torch.Tensor, layers: Sequence[int], keep_idx: torch.Tensor | None = None,
                       norm: bool = True) -> list[torch.Tensor]:
        """Outputs of the blocks at `layers` (0-based; negative counts from the end, -1 = last block),
        each (B, K or N, D), passed through the final norm when `norm`, in the order asked."""
        depth = len(self.blocks)
        resolved = [i % depth if -depth <= i < depth else None for i in layers]
        if any(i is None for i in resolved):
            raise ValueError(f"layers {list(layers)} out of range for depth {depth}")
        wanted = sorted(set(resolved))  # type: ignore[arg-type]
        _, taken = self._run(x, keep_idx, wanted)
        by_layer = dict(zip(wanted, taken, strict=True))
        return [self.norm(by_layer[i]) if norm else by_layer[i] for i in resolved]  # type: ignore[index]


def build_encoder(size: str, *, img_size: int, num_frames: int, patch_size: int = 16, tubelet_size: int = 2,
                  in_chans: int = 3, depth: int | None = None, drop_path: float = 0.0,
                  use_rope: bool = False) -> VideoViT:
    """A registered size (see salt.models.sizes.ENCODER_SIZES); `depth` overrides the depth for debug runs."""
    return VideoViT(spec=get_spec(size, depth), img_size=img_size, num_frames=num_frames, patch_size=patch_size,
                    tubelet_size=tubelet_size, in_chans=in_chans, drop_path=drop_path, use_rope=use_rope)
