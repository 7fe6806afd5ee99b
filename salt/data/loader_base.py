"""What both loaders share: position, epochs, resume state, bad-sample bookkeeping, batch assembly."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import torch

from salt.data.batch import MaskPrefetcher, VideoBatch
from salt.data.config import LoaderConfig
from salt.data.plan import BatchPlan, BatchPlanner, LoaderError, LoaderStats
from salt.data.shardset import ShardSet
from salt.data.storage import retry_count
from salt.masks import MaskGenerator

BAD_WINDOW = 1000  # samples: the span over which data.max_bad_fraction is judged


class VideoLoaderBase:
    """Iterates one epoch per `for batch in loader`; `state_dict()` / `load_state_dict()` save and
    restore the position (epoch, batches consumed) and the samples found undecodable."""

    def __init__(self, cfg: LoaderConfig, rank: int, world: int, mask_generator: MaskGenerator | None,
                 only_shards: Sequence[int] | None = None, pin_memory: bool = False):
        """only_shards: precompute mode reads only these shard numbers (of them, rank r reads s % world == r).
        pin_memory: the batches go to a GPU: host tensors (labels, masks, CPU-made clips) come page-locked."""
        cfg.validate()
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.pin_memory = pin_memory
        self._retries_seen = retry_count()  # this process's retries before the loader opened its shard set
        self.shards = ShardSet(cfg.shards, verify=cfg.verify_shards, retry=cfg.retry_policy())
        self.planner = BatchPlanner(self.shards, cfg, rank, world, only_shards)
        self.masks = MaskPrefetcher(mask_generator, cfg.seed, rank, pin=pin_memory)
        self.stats = LoaderStats()
        self.epoch, self.next_index = 0, 0
        self._new_bad: list[tuple[str, str]] = []  # (key, shard) found bad since take_new_bad()
        self._bad_at: deque[int] = deque()  # samples delivered when each recent bad sample was found

    def __len__(self) -> int:
        return self.planner.batches_per_epoch

    @property
    def num_classes(self) -> int:
        return len(self.shards.classes)

    def __iter__(self) -> Iterator[VideoBatch]:
        while self.next_index < len(self):
            batch = self._next()
            assert (batch.epoch, batch.index) == (self.epoch, self.next_index), "loader lost its position"
            self.next_index += 1
            self.stats.batches += 1
            self.stats.samples += self.cfg.batch_size
            yield batch
        self.epoch, self.next_index = self.epoch + 1, 0  # work in flight runs on into the next epoch

    def endless(self) -> Iterator[VideoBatch]:
        """Batches epoch after epoch, for step-counted loops (training, throughput measurements)."""
        while True:
            yield from self

    def _next(self) -> VideoBatch:
        raise NotImplementedError

    def _stop(self) -> None:
        """Drop any work in flight (the next batch is produced from the current position)."""
        self.masks.reset()

    def _mark_bad(self, index: int, reason: str = "") -> None:
        """Skips sample `index` from now on. Raises LoaderError when more than data.max_bad_fraction of the
        last BAD_WINDOW samples failed: a run that would quietly eat its data set stops instead."""
        if index in self.planner.bad:
            return
        self.planner.bad.add(index)
        self.stats.bad_samples += 1
        self.stats.bad_keys.append(self.shards.keys[index])
        self._new_bad.append((self.shards.keys[index], self.shards.shard_of(index)))
        seen = self.stats.samples
        self._bad_at.append(seen)
        while self._bad_at and self._bad_at[0] < seen - BAD_WINDOW:
            self._bad_at.popleft()
        if len(self._bad_at) > self.cfg.max_bad_fraction * BAD_WINDOW:
            why = f" (the last: {reason})" if reason else ""
            raise LoaderError(f"{len(self._bad_at)} samples failed to decode within {BAD_WINDOW} samples, more than "
                              f"data.max_bad_fraction={self.cfg.max_bad_fraction:g} of them{why}: the machine or the "
                              f"shard set is at fault (`python -m dataprep.shards --verify {self.shards.root}` "
                              "checks the shards)")

    def _note_retries(self, from_workers: int = 0) -> None:
        """Retries of remote reads since the last call: this process's, and `from_workers` done elsewhere."""
        now = retry_count()
        self.stats.storage_retries += now - self._retries_seen + from_workers
        self._retries_seen = now

    def take_new_bad(self) -> list[tuple[str, str]]:
        """(key, shard) of each sample found undecodable (and skipped) since the last call."""
        new, self._new_bad = self._new_bad, []
        return new

    def _assemble(self, plan: BatchPlan, video: torch.Tensor, worker_retries: int = 0) -> VideoBatch:
        """video: (V * B, T, S, S, C) uint8 ((V * B, C, T, S, S) float32 under handoff float32), view-major: rows [v * B, (v + 1) * B) are view v of each sample."""
        self._note_retries(worker_retries)
        v = len(plan.samples[0].views)
        upcoming, e, i = [], plan.epoch, plan.index + 1
        for _ in range(2):
            if i >= len(self):
                e, i = e + 1, 0
            upcoming.append((e, i))
            i += 1
        labels = [s.view_labels[j] for j in range(v) for s in plan.samples]
        label_tensor = torch.tensor(labels, dtype=torch.long)
        return VideoBatch(
            video=video,
            labels=label_tensor.pin_memory() if self.pin_memory else label_tensor,
            keys=[s.key for _ in range(v) for s in plan.samples],
            view_ids=torch.tensor([s.views[j][0] for j in range(v) for s in plan.samples], dtype=torch.long),
            masks=self.masks.get(video.shape[0], plan.epoch, plan.index, upcoming),
            epoch=plan.epoch, index=plan.index, valid=plan.valid, norm=self.cfg.pixel_norm(),
            unlabelled=sum(label < 0 for label in labels))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.next_index,
                "samples_consumed": self.next_index * self.cfg.batch_size, "rank": self.rank,
                "world": self.world, "bad_keys": sorted(self.shards.keys[i] for i in self.planner.bad)}

    def load_state_dict(self, state: dict) -> None:
        self._stop()
        self.epoch, self.next_index = int(state["epoch"]), int(state["batch"])
        index = {k: i for i, k in enumerate(self.shards.keys)} if state.get("bad_keys") else {}
        self.planner.bad = {index[k] for k in state.get("bad_keys", []) if k in index}
        # the run's count goes on from the checkpoint's (these are not new: take_new_bad() leaves them out)
        self.stats.bad_keys = sorted(self.shards.keys[i] for i in self.planner.bad)
        self.stats.bad_samples = len(self.stats.bad_keys)

    def close(self) -> None:
        self._stop()
        self.masks.close()
        self.shards.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
