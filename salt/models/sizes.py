"""Registry of ViT sizes (standard widths/depths/heads; giant/gigantic as V-JEPA 2's *_xformers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderSpec:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)  # timm Block's rounding

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


ENCODER_SIZES: dict[str, EncoderSpec] = {
    "tiny": EncoderSpec(192, 12, 3),
    "small": EncoderSpec(384, 12, 6),
    "base": EncoderSpec(768, 12, 12),
    "large": EncoderSpec(1024, 24, 16),
    "huge": EncoderSpec(1280, 32, 16),
    "giant": EncoderSpec(1408, 40, 22, 48 / 11),  # MLP hidden 6144, head dim 64
    "gigantic": EncoderSpec(1664, 48, 26, 64 / 13),  # MLP hidden 8192, head dim 64
}


def get_spec(size: str, depth: int | None = None) -> EncoderSpec:
    """The registered spec for `size`, with an optional depth override (tiny debug runs)."""
    try:
        spec = ENCODER_SIZES[size]
    except KeyError:
        raise ValueError(f"unknown encoder size {size!r}; expected one of {list(ENCODER_SIZES)}") from None
    if depth is not None:
        spec = EncoderSpec(spec.embed_dim, depth, spec.num_heads, spec.mlp_ratio)
    return spec
