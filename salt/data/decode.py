"""Clip decoding and augmentation in PyAV + torch: the reference for what the DALI pipeline computes."""

from __future__ import annotations

import io

import av
import numpy as np
import torch
import torch.nn.functional as F

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


def augment(frames: np.ndarray, view: ViewParams, crop_size: int, mean: tuple[float, float, float],
            std: tuple[float, float, float]) -> torch.Tensor:
    """(T, H, W, 3) uint8 → crop, resize (bilinear, antialiased), flip, normalise → (3, T, S, S) float."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = x[:, :, view.top:view.top + view.height, view.left:view.left + view.width]
    x = F.interpolate(x, size=(crop_size, crop_size), mode="bilinear", antialias=True, align_corners=False)
    if view.flip:
        x = x.flip(-1)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    return ((x - m) / s).permute(1, 0, 2, 3).contiguous()  # (3, T, S, S)


def decode_views(data: bytes, frames: int, views: list[tuple[int, ViewParams]], recipe: ViewRecipe,
                 mean: tuple[float, float, float], std: tuple[float, float, float]) -> list[torch.Tensor]:
    """Every view of one sample; views sharing a start frame share one decode."""
    decoded: dict[int, np.ndarray] = {}
    out = []
    for _, view in views:
        if view.start_frame not in decoded:
            decoded[view.start_frame] = decode_frames(data, frame_indices(recipe, view.start_frame, frames))
        out.append(augment(decoded[view.start_frame], view, recipe.crop_size, mean, std))
    return out
