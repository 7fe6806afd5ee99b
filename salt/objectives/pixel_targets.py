"""VideoMAE pixel targets: each tubelet's pixels, optionally normalised per patch and channel."""

from __future__ import annotations

import torch


def patchify(clips: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet*patch*patch, C); tokens in the patch embedding's (t, h, w) order,
    pixels within a token in (t, h, w) order."""
    B, C, T, H, W = clips.shape
    t, p = tubelet_size, patch_size
    x = clips.reshape(B, C, T // t, t, H // p, p, W // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', t, p, p, C)
    return x.reshape(B, (T // t) * (H // p) * (W // p), t * p * p, C)


def pixel_targets(clips: torch.Tensor, patch_size: int, tubelet_size: int, normalize: bool = True,
                  eps: float = 1e-6) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet*patch*patch*C) float32 targets, pixel-major then channel.

    normalize: subtract each patch's per-channel mean and divide by its per-channel (unbiased) std,
    as VideoMAE does. That is invariant to the per-channel affine input normalisation, so targets need
    no un-normalising; with normalize=False the targets are the (already normalised) input pixels.
    """
    x = patchify(clips.float(), patch_size, tubelet_size)  # (B, N, P, C)
    if normalize:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps)
    return x.flatten(2)  # (B, N, P*C)
