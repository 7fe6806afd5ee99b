"""Views cut from decoded uint8 frames in torch, and the normalisation done where a batch is used.

Loaders hand over uint8 clips (a quarter of float32's bytes) and the training device converts and
normalises them in one vectorised step (`PixelNorm`). On the CPU the DALI loader decodes in DALI and
cuts its views here: torch's uint8 antialiased bilinear resize (a channels-last SIMD kernel) ran at
1.85x the rate of DALI's CPU resize on the same decoded clips, and the whole loader at 1.4-1.7x its
float32 DALI-augmented form (`benchmarks/loader.py`, rows `dali` and `dali-float`). The reference
loader calls the same function, so both loaders cut the same pixels from the same frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salt.data.views import ViewParams

HANDOFFS = ("uint8", "float32")  # what a loader returns: uint8 pixels, or float32 normalised in the loader


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch ops inside run on one thread: where DALI's threads are decoding the next batches, a
    second team of torch threads only contends with them (measured: 88 -> 117 clips/s on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cut_view(frames: torch.Tensor, view: ViewParams, size: int, out: torch.Tensor) -> None:
    """frames: (T, H, W, 3) uint8 → out: (T, S, S, 3) uint8; crop the view's box, resize it to S x S
    (bilinear, antialiased), flip when the view says so. Channels stay last, as decoders and torch's
    fast uint8 resize keep them: the one reordering to (3, T, S, S) is PixelNorm's, on the device."""
    x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W) with channels-last strides: no copy
    x = x[:, :, view.top:view.top + view.height, view.left:view.left + view.width]
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)  # (T, 3, S, S)
    y = y.permute(0, 2, 3, 1)  # (T, S, S, 3): the channels-last result, viewed without a copy
    out.copy_(y.flip(-2) if view.flip else y)


_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """scale 1 / (255 std) and shift -mean / std as (1, 3, 1, 1, 1) tensors on `device`, made once per device:
    building them from Python lists each step would be a host-to-device copy that waits for the GPU."""
    key = (tuple(mean), tuple(std), device)
    if key not in _CONSTANTS:
        scale = torch.tensor([1 / (255 * s) for s in std]).view(1, 3, 1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1, 1)
        _CONSTANTS[key] = (scale.to(device), shift.to(device))
    return _CONSTANTS[key]


@dataclass(frozen=True)
class PixelNorm:
    """uint8 channels-last pixels → (x / 255 - mean) / std, channels first, where the batch is used."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """video: (N, T, H, W, 3) uint8 → (N, 3, T, H, W) `dtype`, contiguous, on video's device (computed
        in float32: the conversion, reordering and normalisation are three passes over the batch)."""
        if video.dtype != torch.uint8 or video.dim() != 5 or video.shape[-1] != 3:
            raise TypeError(f"PixelNorm expects (N, T, H, W, 3) uint8 pixels, got {tuple(video.shape)} "
                            f"{video.dtype}")
        scale, shift = _norm_constants(self.mean, self.std, video.device)  # (1, 3, 1, 1, 1) each
        n, t, h, w, c = video.shape
        x = torch.empty((n, c, t, h, w), device=video.device)
        x.copy_(video.permute(0, 4, 1, 2, 3)).mul_(scale).add_(shift)
        return x if dtype == torch.float32 else x.to(dtype)
