"""VideoMAE-style pixel decoder: a narrow TokenDecoder whose head outputs one tubelet's pixels per token."""

from __future__ import annotations

from salt.masks.grid import TokenGrid
from salt.models.token_decoder import DecoderSpec, TokenDecoder

DEFAULT_PIXEL_DECODER = DecoderSpec(width=384, depth=4, heads=6)  # VideoMAE ViT-B decoder


def build_pixel_decoder(*, grid: TokenGrid, in_dim: int, patch_size: int, tubelet_size: int, in_chans: int = 3,
                        spec: DecoderSpec = DEFAULT_PIXEL_DECODER, use_rope: bool = False) -> TokenDecoder:
    """Output per predicted token: tubelet * patch * patch * in_chans values (salt.objectives.pixel_targets order).
    The input projection has no bias, as VideoMAE's encoder_to_decoder."""
    return TokenDecoder(grid=grid, in_dim=in_dim, out_dim=in_chans * tubelet_size * patch_size * patch_size,
                        spec=spec, embed_bias=False, use_rope=use_rope)
