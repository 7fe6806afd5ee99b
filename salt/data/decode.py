"""Clip decoding in PyAV and views cut in torch: the reference for what the DALI pipeline computes."""

from __future__ import annotations

import io

import av
import numpy as np
import torch

from salt.data.augment import PixelNorm, cut_view
from salt.data.views import ViewParams, ViewRecipe, frame_indices

SEEK_AFTER = 32  # frames; closer starts decode from the sample's first frame


def decode_frames(data: bytes, indices: list[int]) -> np.ndarray:
    """Frames at `indices` (sorted or not, repeats allowed) → (len(indices), H, W, 3) uint8 RGB.
    Raises av.error.FFmpegError / ValueError when the payload does not decode that far."""
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if wanted[0] >= SEEK_AFTER and rate and stream.time_base:
            container.seek(int(wanted[0] / rate / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            i = round(frame.time * rate) if frame.time is not None else None
            if i is None:
                raise ValueError("frame without a timestamp")
            if i in got or i not in wanted:
                if i > wanted[-1]:
                    break
                continue
            got[i] = frame.to_ndarray(format="rgb24")
            if len(got) == len(wanted):
                break
    missing = [i for i in wanted if i not in got]
    if missing:
        raise ValueError(f"frames {missing[:3]} not found (decoded up to {max(got, default=-1)})")
    return np.stack([got[i] for i in indices])


def decode_views(data: bytes, frames: int, views: list[tuple[int, ViewParams]], recipe: ViewRecipe,
                 norm: PixelNorm | None) -> list[torch.Tensor]:
    """Every view of one sample as (T, S, S, 3) uint8, or (3, T, S, S) float32 normalised by `norm` when
    it is given (handoff float32); views sharing a start frame share one decode."""
    decoded: dict[int, torch.Tensor] = {}
    out = []
    for _, view in views:
        if view.start_frame not in decoded:
            decoded[view.start_frame] = torch.from_numpy(
                decode_frames(data, frame_indices(recipe, view.start_frame, frames)))  # (T, H, W, 3)
        x = torch.empty((recipe.num_frames, recipe.crop_size, recipe.crop_size, 3), dtype=torch.uint8)
        cut_view(decoded[view.start_frame], view, recipe.crop_size, x)
        out.append(x if norm is None else norm(x[None])[0])
    return out
