"""Loader throughput as the loader benchmark and the demo measure it: clips/s after the first batch,
time to the first batch, and peak resident memory of the process and its workers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from salt.data.config import LoaderConfig
from salt.data.loaders import open_loader


class PeakRSS:
    """Peak resident memory of this process and its children (DataLoader workers), sampled."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            time.sleep(self.interval)


def _tree_rss(pid: int) -> int:
    total = 0
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        total += pages * os.sysconf("SC_PAGE_SIZE")
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _tree_rss(int(child))
    except (OSError, ValueError, IndexError):
        pass
    return total


def measure(make: Callable[[], Iterator[int]], seconds: float) -> dict:
    """`make()` returns an iterator of clip counts per batch. Returns clips/s after the first batch."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        it = make()
        next(it)
        first = time.perf_counter() - t0
        clips, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            clips += next(it)
        elapsed = time.perf_counter() - t1
        del it
    return {"clips_per_s": clips / elapsed, "first_batch_s": first, "peak_rss_mb": mem.peak / 2**20}


def run_loader(cfg: LoaderConfig, kind: str) -> Iterator[int]:
    """Clips per batch of salt's own loader of this kind (salt.data.loaders), endlessly."""
    yield from (batch.video.shape[0] for batch in open_loader(cfg, kind).endless())
