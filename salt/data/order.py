"""Which samples a rank reads in an epoch, in which order: a pure function of (seed, epoch, rank).

The shard order is shuffled per epoch (same permutation on every rank), the resulting sample list is
cut into `world` contiguous slices (rank r reads slice r, mostly sequential I/O), and each slice goes
through a streaming shuffle buffer. Every rank yields `batches_per_epoch` batches, so no collective
waits on a rank that ran out; the few samples past the last full batch rotate with the shard order.
"""

from __future__ import annotations

import numpy as np


def batches_per_epoch(num_samples: int, world: int, batch_size: int) -> int:
    n = (num_samples // world) // batch_size
    if n < 1:
        raise ValueError(f"{num_samples} samples cannot fill one batch of {batch_size} on each of {world} "
                         "ranks; lower the batch size or add data")
    return n


def epoch_order(shard_of: np.ndarray, seed: int, epoch: int, rank: int, world: int, shuffle: bool,
                buffer: int) -> np.ndarray:
    """Sample indices (into the shard set) for `rank` in `epoch`. `shard_of[i]` is sample i's shard;
    samples of a shard are contiguous and in stored order."""
    n = len(shard_of)
    if shuffle:
        num_shards = int(shard_of.max()) + 1
        shard_perm = np.random.default_rng([seed, epoch, 0]).permutation(num_shards)
        starts = np.searchsorted(shard_of, np.arange(num_shards + 1))
        order = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shard_perm])
    else:
        order = np.arange(n)
    mine = order[rank * n // world:(rank + 1) * n // world]
    if shuffle and buffer > 1:
        mine = _buffer_shuffle(mine, np.random.default_rng([seed, epoch, rank + 1]), buffer)
    return mine


def _buffer_shuffle(items: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A streaming shuffle: hold `size` items, emit a random one and put the next item in its place."""
    out = np.empty_like(items)
    buf = list(items[:size])
    picks = rng.integers(0, len(buf), size=max(0, len(items) - len(buf))) if buf else []
    k = 0
    for j, item in zip(picks, items[len(buf):], strict=True):
        out[k] = buf[j]
        buf[j] = item
        k += 1
    rest = np.asarray(buf, dtype=items.dtype)
    out[k:] = rest[rng.permutation(len(rest))]
    return out
