"""The reference loader: the DALI loader's contract (same batches, views, masks, position) with
PyAV decoding and torch augmentation in `torch.utils.data.DataLoader` worker processes.

It reads every codec on the CPU (H.264 and HEVC included), so it is the fallback where DALI cannot
decode, and the baseline the DALI pipeline is measured against.
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (its exit hook, registered first, runs after ours)
import signal
import weakref
from collections.abc import Iterator, Sequence

import av
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from salt.data.augment import PixelNorm
from salt.data.batch import VideoBatch
from salt.data.config import LoaderConfig
from salt.data.decode import decode_views
from salt.data.loader_base import VideoLoaderBase
from salt.data.plan import BatchPlanner, CorruptSampleError, LoaderError, RemoteReadError
from salt.data.shardset import ShardSet
from salt.data.storage import StorageError, retry_count
from salt.masks import MaskGenerator
from salt.processes import loader_context


class _Batches(IterableDataset):
    """Batches [start, stop) of one epoch; worker w of n produces batches start + w, start + w + n, ...
    so that DataLoader's round-robin over workers returns them in order."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, rank: int, world: int, epoch: int, start: int,
                 bad: set[int], only_shards: Sequence[int] | None = None):
        self.shards, self.cfg, self.rank, self.world = shards, cfg, rank, world
        self.epoch, self.start, self.bad, self.only_shards = epoch, start, bad, only_shards

    def __iter__(self) -> Iterator[tuple[torch.Tensor, object, list[int], int]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        planner = BatchPlanner(self.shards, self.cfg, self.rank, self.world, self.only_shards)
        planner.bad = set(self.bad)
        recipe = self.cfg.recipe()
        retries = retry_count()
        for index in range(self.start + wid, planner.batches_per_epoch, nw):
            new_bad: list[int] = []
            while True:
                try:
                    plan = planner.plan(self.epoch, index)  # reads each sample's metadata
                except StorageError as e:
                    raise RemoteReadError(str(e)) from None
                try:
                    views = [v for s in plan.samples for v in self._decode(s, recipe)]
                    break
                except _SampleFailed as e:
                    if self.cfg.strict:
                        raise CorruptSampleError.for_sample(self.shards.shard_of(e.index), e.key, e.reason) from None
                    planner.bad.add(e.index)
                    new_bad.append(e.index)
            b, v = len(plan.samples), len(plan.samples[0].views)
            video = torch.stack(views).unflatten(0, (b, v)).transpose(0, 1).flatten(0, 1)  # (V * B, ...) view-major
            now = retry_count()
            yield video.contiguous(), plan, new_bad, (now - retries) if info else 0  # a worker's own retries
            retries = now

    def _decode(self, sample, recipe) -> list[torch.Tensor]:
        try:
            # handoff float32: the worker normalises (the uint8 default leaves it to the training device)
            norm = None if self.cfg.handoff == "uint8" else PixelNorm(tuple(self.cfg.mean), tuple(self.cfg.std))
            data = self.shards.video_bytes(sample.index)
        except StorageError as e:  # the shard set's server stayed unreachable past the retry budget
            raise RemoteReadError(str(e)) from None
        try:
            return decode_views(data, sample.frames, sample.views, recipe, norm)
        except (av.error.FFmpegError, ValueError, IndexError) as e:
            raise _SampleFailed(sample.index, sample.key, f"{type(e).__name__}: {e}") from None


def _leave_signals_to_the_job(_worker_id: int) -> None:
    """Workers ignore SIGINT (Ctrl-C reaches the whole process group) and SIGTERM (the deepspeed launcher
    terminates each rank's whole process tree): the training process stops at a step boundary and then
    ends its workers itself (`_shut_down`); a worker killed first would fail the batch in flight (and a
    worker killed by a signal makes DataLoader raise in the training process at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_workers: weakref.WeakSet = weakref.WeakSet()  # every worker process started, until it is gone


def _shut_down(it: Iterator | None) -> None:
    """Ends a DataLoader iterator's workers now. Since they ignore SIGTERM, DataLoader's last resort
    (terminate) and multiprocessing's at exit (terminate, then join without a timeout) cannot end one:
    a worker still alive after DataLoader's shutdown is killed."""
    if it is None:
        return
    procs = list(getattr(it, "_workers", []))
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for w in procs:
        if w.is_alive():
            w.kill()
            w.join(timeout=5)


@atexit.register
def _kill_leftover_workers() -> None:
    for w in list(_workers):
        if w.is_alive():
            w.kill()
            w.join(timeout=5)


class _SampleFailed(Exception):
    def __init__(self, index: int, key: str, reason: str):
        super().__init__(reason)
        self.index, self.key, self.reason = index, key, reason


class ReferenceVideoLoader(VideoLoaderBase):
    def __init__(self, cfg: LoaderConfig, rank: int = 0, world: int = 1,
                 mask_generator: MaskGenerator | None = None, only_shards: Sequence[int] | None = None,
                 pin_memory: bool = False):
        """pin_memory: the batches go to a GPU: DataLoader pins them, so their copy there is asynchronous."""
        super().__init__(cfg, rank, world, mask_generator, only_shards, pin_memory=pin_memory)
        self._it: Iterator | None = None

    def _start(self) -> None:
        ds = _Batches(self.shards, self.cfg, self.rank, self.world, self.epoch, self.next_index,
                      set(self.planner.bad), self.planner.only_shards)
        workers = min(self.cfg.threads, len(self) - self.next_index)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=self.cfg.prefetch if workers else None,
                        persistent_workers=False, multiprocessing_context=loader_context([__name__]) if workers else None,
                        worker_init_fn=_leave_signals_to_the_job if workers else None, pin_memory=self.pin_memory)
        self._it = iter(dl)
        _workers.update(getattr(self._it, "_workers", []))

    def _stop(self) -> None:
        super()._stop()
        it, self._it = self._it, None
        _shut_down(it)

    def _next(self) -> VideoBatch:
        if self._it is None:
            self._start()
        try:
            video, plan, new_bad, worker_retries = next(self._it)
        except StopIteration:
            raise LoaderError("reference loader ended its epoch early") from None
        except (RemoteReadError, CorruptSampleError) as e:
            # re-raised by DataLoader with the worker's traceback as text: the message is its last line
            self._stop()
            last = str(e).strip().splitlines()[-1]
            raise type(e)(last.split(f"{type(e).__name__}: ", 1)[-1]) from None
        for i in new_bad:
            self._mark_bad(i)
        if self.next_index + 1 >= len(self):
            it, self._it = self._it, None  # the next epoch starts new workers
            _shut_down(it)
        return self._assemble(plan, video, worker_retries)
