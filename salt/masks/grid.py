"""The token grid of a clip: (T', H', W') after a tubelet x patch x patch embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenGrid:
    """Token grid shape. Tokens are flattened t-major, then h, then w (the patch embedding's order)."""

    frames: int  # T' = num_frames // tubelet_size
    height: int  # H' = img_size // patch_size
    width: int  # W' = img_size // patch_size

    @classmethod
    def from_clip(cls, *, num_frames: int, img_size: int, patch_size: int, tubelet_size: int) -> TokenGrid:
        if num_frames % tubelet_size or img_size % patch_size:
            raise ValueError(f"clip {num_frames}x{img_size}x{img_size} is not divisible into "
                             f"tubelets of {tubelet_size}x{patch_size}x{patch_size}")
        return cls(num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    @property
    def num_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def spatial_tokens(self) -> int:
        return self.height * self.width

    def coords(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 3) long tensor of (t, h, w) for each flat token index."""
        t, h, w = torch.meshgrid(torch.arange(self.frames, device=device),
                                 torch.arange(self.height, device=device),
                                 torch.arange(self.width, device=device), indexing="ij")
        return torch.stack([t.flatten(), h.flatten(), w.flatten()], dim=-1)  # (N, 3)
