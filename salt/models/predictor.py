"""V-JEPA latent predictor: narrow TokenDecoder whose head projects to the target encoder's width."""

from __future__ import annotations

from salt.masks.grid import TokenGrid
from salt.models.token_decoder import DecoderSpec, TokenDecoder

DEFAULT_PREDICTOR = DecoderSpec(width=384, depth=12, heads=12)


def build_predictor(*, grid: TokenGrid, in_dim: int, out_dim: int, spec: DecoderSpec = DEFAULT_PREDICTOR,
                    use_rope: bool = False, drop_path: float = 0.0) -> TokenDecoder:
    """in_dim: the student's width; out_dim: the teacher's width (they may differ)."""
    return TokenDecoder(grid=grid, in_dim=in_dim, out_dim=out_dim, spec=spec, use_rope=use_rope,
                        drop_path=drop_path)
