"""A loaded batch and the masks that travel with it."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from salt.data.augment import PixelNorm
from salt.masks import MaskBatch, MaskGenerator


@dataclass
class VideoBatch:
    video: torch.Tensor  # (V * B, T, H, W, C) uint8 pixels, channels last; (V * B, C, T, H, W) float32,
    # normalised, when norm is None (handoff float32); view-major: row v * B + i is view v of sample i
    labels: torch.Tensor  # (V * B,) long, -1 when unlabelled
    keys: list[str]  # V * B sample keys
    view_ids: torch.Tensor  # (V * B,) long
    masks: list[MaskBatch] | None  # drawn for V * B clips
    epoch: int
    index: int  # batch number within the epoch
    valid: int  # samples of this batch that are real (fewer only in a padded last evaluation batch)
    norm: PixelNorm | None = None  # turns uint8 `video` into model input; None: `video` is already normalised
    unlabelled: int = 0  # rows with label -1 (known on the host: checking the tensor would read it back)

    def model_input(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The clips as the encoder takes them: (V * B, C, T, H, W) `dtype` on `device`, moved there as
        uint8 and normalised there."""
        video = self.video.to(device, non_blocking=True)
        return video.to(dtype) if self.norm is None else self.norm(video, dtype)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> VideoBatch:
        return VideoBatch(self.video.to(device, non_blocking=non_blocking), self.labels.to(device),
                          self.keys, self.view_ids, None if self.masks is None else
                          [m.to(device, non_blocking=non_blocking) for m in self.masks], self.epoch, self.index,
                          self.valid, self.norm, self.unlabelled)


def batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index, rank, 7]).generate_state(1)[0])


def draw_masks(gen: MaskGenerator | None, count: int, seed: int, epoch: int, index: int,
               rank: int) -> list[MaskBatch] | None:
    """Masks for one batch, from a generator seeded by (seed, epoch, batch, rank): the same on any
    loader, any worker count, and after a resume."""
    if gen is None:
        return None
    g = torch.Generator().manual_seed(batch_seed(seed, epoch, index, rank))
    return gen(count, g)


def draw_pinned_masks(gen: MaskGenerator | None, count: int, seed: int, epoch: int, index: int,
                      rank: int) -> list[MaskBatch] | None:
    """draw_masks, in page-locked memory: their copy to a GPU is then asynchronous (from pageable memory
    it would wait for the device's queue)."""
    masks = draw_masks(gen, count, seed, epoch, index, rank)
    return None if masks is None else [m.pin_memory() for m in masks]


class MaskPrefetcher:
    """Draws the masks of upcoming batches in a background thread, off the training step's path (pinned
    there when the batches go to a GPU)."""

    def __init__(self, gen: MaskGenerator | None, seed: int, rank: int, depth: int = 2, pin: bool = False):
        self.gen, self.seed, self.rank, self.depth = gen, seed, rank, depth
        self._draw = draw_pinned_masks if pin else draw_masks
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="masks") if gen else None
        self._pending: dict[tuple[int, int, int], Future] = {}

    def get(self, count: int, epoch: int, index: int, upcoming: list[tuple[int, int]]) -> list[MaskBatch] | None:
        if self._pool is None:
            return None
        fut = self._pending.pop((count, epoch, index), None)
        for e, i in upcoming[: self.depth]:
            if (count, e, i) not in self._pending:
                self._pending[(count, e, i)] = self._pool.submit(self._draw, self.gen, count, self.seed, e, i,
                                                                 self.rank)
        return fut.result() if fut is not None else self._draw(self.gen, count, self.seed, epoch, index, self.rank)

    def reset(self) -> None:
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()

    def close(self) -> None:
        self.reset()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
