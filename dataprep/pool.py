"""Ordered parallel map over worker processes that survives a worker dying (a decoder crashing on a
corrupt file): the items that were in flight are retried one at a time, each in a fresh process, and
only the one that kills its own process is reported as crashed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int,
                on_crash: Callable[[T], R], ahead: int = 4) -> Iterator[R]:
    """Yields fn(item) in input order, with at most `workers * ahead` items in flight. An item whose
    worker process dies yields on_crash(item) instead."""
    it = iter(items)
    pool = ProcessPoolExecutor(max_workers=workers)
    pending: deque[tuple[T, Future]] = deque()
    try:
        for x in islice(it, workers * ahead):
            pending.append((x, pool.submit(fn, x)))
        while pending:
            item, fut = pending.popleft()
            try:
                result = fut.result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                stranded = [item] + [x for x, _ in pending]
                pending.clear()
                for x in stranded:
                    yield _run_isolated(fn, x, on_crash)
                pool = ProcessPoolExecutor(max_workers=workers)
                for x in islice(it, workers * ahead):
                    pending.append((x, pool.submit(fn, x)))
                continue
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _run_isolated(fn: Callable[[T], R], item: T, on_crash: Callable[[T], R]) -> R:
    with ProcessPoolExecutor(max_workers=1) as solo:
        try:
            return solo.submit(fn, item).result()
        except BrokenProcessPool:
            return on_crash(item)
