"""The per-batch plan both loaders execute: which samples, which views, and the loader's position.

Reading order, view parameters and masks are pure functions of (seed, epoch, batch, rank), so the
DALI and reference loaders produce the same batches, and a loader restored from `state_dict()`
continues with exactly the batches it had not yet produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from salt.data.config import LoaderConfig
from salt.data.order import batches_per_epoch, epoch_order
from salt.data.shardset import ShardSet
from salt.data.views import ViewParams, cached_view_id, eval_view, train_view


class LoaderError(Exception):
    """A problem the user must fix (bad shard set, codec the device cannot decode, all samples bad)."""


class RemoteReadError(LoaderError):
    """A remote shard set (s3://, https://) that stayed unreachable past its retry budget; the message names
    the URL and the budget (data.remote_attempts, data.remote_timeout_s)."""


class CorruptSampleError(LoaderError):
    """A sample failed to decode under strict mode; the message names its shard and key."""

    @classmethod
    def for_sample(cls, shard: str, key: str, reason: str) -> CorruptSampleError:
        return cls(f"sample {key} in shard {shard} failed to decode: {reason}")


@dataclass
class LoaderStats:
    batches: int = 0
    samples: int = 0
    bad_samples: int = 0  # distinct samples found undecodable and skipped
    bad_keys: list[str] = field(default_factory=list)
    storage_retries: int = 0  # retried remote reads (s3://, https:// shard sets), every worker of this loader


@dataclass
class SamplePlan:
    index: int  # into the shard set
    key: str
    label: int
    views: list[tuple[int, ViewParams]]  # (view id, params); views of one decode share start_frame
    frames: int
    view_labels: list[int]  # per view: the label, mirrored for a flipped view when the dataset says how


def plan_sample(shards: ShardSet, index: int, cfg: LoaderConfig, epoch: int) -> SamplePlan:
    meta = shards.meta(index)
    recipe = cfg.recipe()
    key, n, h, w = meta["key"], meta["frames"], meta["height"], meta["width"]
    if cfg.mode == "eval":
        ids = list(range(cfg.eval_clips * cfg.eval_crops))
        views = [(i, eval_view(recipe, i, cfg.eval_clips, cfg.eval_crops, n, h, w)) for i in ids]
    elif cfg.mode == "precompute":  # every cached view, one decode each (views_per_clip is 1)
        views = [(i, train_view(recipe, key, i, n, h, w)) for i in range(cfg.cached_views)]
    elif cfg.cached_views:
        i = cached_view_id(cfg.seed, key, epoch, cfg.cached_views)
        views = [(i, train_view(recipe, key, i, n, h, w))]
    else:
        ids = [epoch * cfg.views_per_clip + v for v in range(cfg.views_per_clip)]
        views = [(i, train_view(recipe, key, i, n, h, w)) for i in ids]
    label = -1 if meta.get("label_index") is None else int(meta["label_index"])
    mirror = shards.label_hflip
    view_labels = [mirror[label] if mirror and p.flip and label >= 0 else label for _, p in views]
    return SamplePlan(index, key, label, views, n, view_labels)


@dataclass
class BatchPlan:
    epoch: int
    index: int
    samples: list[SamplePlan]
    valid: int  # the first `valid` samples are real; the rest pad the last evaluation batch


def shard_batches(shard_ids: np.ndarray, batch_size: int, rank: int, world: int,
                  only_shards: Sequence[int] | None) -> list[tuple[int, int, int]]:
    """Precompute mode: (shard, first sample, end) of each batch, in stored order. A batch never spans two
    shards (one output file per shard); shard s goes to rank s % world."""
    num_shards = int(shard_ids.max()) + 1 if len(shard_ids) else 0
    wanted = range(num_shards) if only_shards is None else sorted(set(only_shards))
    if any(not 0 <= s < num_shards for s in wanted):
        raise LoaderError(f"only_shards {list(wanted)} outside the shard set's {num_shards} shards")
    starts = np.searchsorted(shard_ids, np.arange(num_shards + 1))
    return [(s, a, min(a + batch_size, int(starts[s + 1]))) for s in wanted if s % world == rank
            for a in range(int(starts[s]), int(starts[s + 1]), batch_size)]


class BatchPlanner:
    """Turns (epoch, batch index) into a BatchPlan for one rank; knows which samples are bad."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, rank: int, world: int,
                 only_shards: Sequence[int] | None = None):
        if not 0 <= rank < world:
            raise LoaderError(f"rank {rank} is outside world size {world}")
        if only_shards is not None and cfg.mode != "precompute":
            raise LoaderError("only_shards is for the precompute mode")
        self.shards, self.cfg, self.rank, self.world = shards, cfg, rank, world
        self.only_shards = only_shards
        # evaluation and precompute cover every sample once: the last batch is padded (BatchPlan.valid)
        self.cover_all = cfg.mode in ("eval", "precompute")
        # precompute: (shard, first sample, end) of each batch; batches are aligned to shards
        self.segments = shard_batches(shards.shard_ids, cfg.batch_size, rank, world, only_shards) \
            if cfg.mode == "precompute" else []
        try:
            if cfg.mode == "precompute":
                self.batches_per_epoch = len(self.segments)
            elif self.cover_all:
                self.batches_per_epoch = math.ceil(math.ceil(len(shards) / world) / cfg.batch_size)
            else:
                self.batches_per_epoch = batches_per_epoch(len(shards), world, cfg.batch_size)
        except ValueError as e:
            raise LoaderError(f"{shards.root}: {e}") from None
        self.bad: set[int] = set()
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            shuffle = self.cfg.mode == "train"
            self._order = epoch_order(self.shards.shard_ids, self.cfg.seed, epoch, self.rank, self.world, shuffle,
                                      self.cfg.shuffle_buffer)
            self._order_epoch = epoch
        return self._order

    def plan(self, epoch: int, index: int) -> BatchPlan:
        b = self.cfg.batch_size
        if self.cfg.mode == "precompute":
            _, start, end = self.segments[index]
            chosen = list(range(start, end))
        else:
            chosen = [int(i) for i in self.order(epoch)[index * b:(index + 1) * b]]
        valid = len(chosen)
        if valid == 0:  # a rank with fewer samples than the others, in cover-all mode
            chosen = [int(self.order(epoch)[-1])] if len(self.order(epoch)) else [0]
            valid = 0
        chosen += [chosen[-1]] * (b - len(chosen))
        good = [i for i in chosen if i not in self.bad]
        if not good:
            keys = ", ".join(f"{self.shards.shard_of(i)}:{self.shards.keys[i]}" for i in chosen[:4])
            raise LoaderError(f"every sample of batch {index} (epoch {epoch}) fails to decode ({keys} ...); "
                              "the shard set looks damaged: verify it or rebuild it with dataprep.shards")
        # a bad sample's place goes to the next good sample of the same batch, so batch sizes, batch
        # counts and every other batch stay as they were
        samples = []
        for j, i in enumerate(chosen):
            if i in self.bad:
                i = good[j % len(good)]
            samples.append(plan_sample(self.shards, i, self.cfg, epoch))
        return BatchPlan(epoch, index, samples, valid)

    def positions(self, epoch: int, index: int):
        """(epoch, index) of the batches from this one on, forever."""
        while True:
            while index < self.batches_per_epoch:
                yield epoch, index
                index += 1
            epoch, index = epoch + 1, 0
