"""The reference loader: the DALI loader's contract (same batches, views, masks, position) with
PyAV decoding and torch augmentation in `torch.utils.data.DataLoader` worker processes.

It reads every codec on the CPU (H.264 and HEVC included), so it is the fallback where DALI cannot
decode, and the baseline the DALI pipeline is measured against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import av
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from salt.data.batch import VideoBatch
from salt.data.config import LoaderConfig
from salt.data.decode import decode_views
from salt.data.loader_base import VideoLoaderBase
from salt.data.plan import BatchPlanner, CorruptSampleError, LoaderError
from salt.data.shardset import ShardSet
from salt.masks import MaskGenerator


class _Batches(IterableDataset):
    """Batches [start, stop) of one epoch; worker w of n produces batches start + w, start + w + n, ...
    so that DataLoader's round-robin over workers returns them in order."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, rank: int, world: int, epoch: int, start: int,
                 bad: set[int], only_shards: Sequence[int] | None = None):
        self.shards, self.cfg, self.rank, self.world = shards, cfg, rank, world
        self.epoch, self.start, self.bad, self.only_shards = epoch, start, bad, only_shards

    def __iter__(self) -> Iterator[tuple[torch.Tensor, object, list[int]]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        planner = BatchPlanner(self.shards, self.cfg, self.rank, self.world, self.only_shards)
        planner.bad = set(self.bad)
        recipe = self.cfg.recipe()
        for index in range(self.start + wid, planner.batches_per_epoch, nw):
            new_bad: list[int] = []
            while True:
                plan = planner.plan(self.epoch, index)
                try:
                    views = [v for s in plan.samples for v in self._decode(s, recipe)]
                    break
                except _SampleFailed as e:
                    if self.cfg.strict:
                        raise CorruptSampleError.for_sample(self.shards.shard_of(e.index), e.key, e.reason) from None
                    planner.bad.add(e.index)
                    new_bad.append(e.index)
            b, v = len(plan.samples), len(plan.samples[0].views)
            video = torch.stack(views).unflatten(0, (b, v)).transpose(0, 1).flatten(0, 1)  # (V * B, C, T, S, S)
            yield video.contiguous(), plan, new_bad

    def _decode(self, sample, recipe) -> list[torch.Tensor]:
        try:
            return decode_views(self.shards.video_bytes(sample.index), sample.frames, sample.views, recipe,
                                self.cfg.mean, self.cfg.std)
        except (av.error.FFmpegError, ValueError, IndexError) as e:
            raise _SampleFailed(sample.index, sample.key, f"{type(e).__name__}: {e}") from None


class _SampleFailed(Exception):
    def __init__(self, index: int, key: str, reason: str):
        super().__init__(reason)
        self.index, self.key, self.reason = index, key, reason


class ReferenceVideoLoader(VideoLoaderBase):
    def __init__(self, cfg: LoaderConfig, rank: int = 0, world: int = 1,
                 mask_generator: MaskGenerator | None = None, only_shards: Sequence[int] | None = None):
        super().__init__(cfg, rank, world, mask_generator, only_shards)
        self._it: Iterator | None = None

    def _start(self) -> None:
        ds = _Batches(self.shards, self.cfg, self.rank, self.world, self.epoch, self.next_index,
                      set(self.planner.bad), self.planner.only_shards)
        workers = min(self.cfg.threads, len(self) - self.next_index)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=self.cfg.prefetch if workers else None,
                        persistent_workers=False, multiprocessing_context="fork" if workers else None)
        self._it = iter(dl)

    def _stop(self) -> None:
        super()._stop()
        self._it = None

    def _next(self) -> VideoBatch:
        if self._it is None:
            self._start()
        try:
            video, plan, new_bad = next(self._it)
        except StopIteration:
            raise LoaderError("reference loader ended its epoch early") from None
        except CorruptSampleError as e:  # re-raised by DataLoader with the worker's traceback as text
            self._it = None
            last = str(e).strip().splitlines()[-1]
            raise CorruptSampleError(last.split("CorruptSampleError: ", 1)[-1]) from None
        for i in new_bad:
            self._mark_bad(i)
        if self.next_index + 1 >= len(self):
            self._it = None  # the next epoch starts new workers
        return self._assemble(plan, video)
