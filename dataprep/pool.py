"""Worker processes for the offline jobs, each task under a wall-clock budget.

Built on pebble's ProcessPool, which attributes a worker's death or a timeout to the one task it was
running and replaces the worker: a decoder that crashes or hangs on one file costs that file only.
Workers start and end as salt.processes says: spawned, never forked, and gone with their parent.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

from pebble import ProcessExpired, ProcessPool

from salt.processes import mp_context, worker_init

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskLost(Generic[T]):
    """A task whose worker did not return: it ran past its budget or its process died."""

    item: T
    kind: str  # "timeout" | "crashed"
    detail: str


class WorkerPool:
    """A spawn-context process pool whose tasks each have a time limit; use as a context manager.
    `stop()` kills the workers at once (a job stopped by a signal)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = ProcessPool(max_workers=workers, initializer=worker_init, initargs=(os.getpid(),),
                                 context=mp_context())

    def ordered_map(self, fn: Callable[[T], R], items: Iterable[T], timeout: Callable[[T], float | None],
                    ahead: int = 4) -> Iterator[R | TaskLost[T]]:
        """fn(item) in input order, at most `workers * ahead` in flight; a task past `timeout(item)`
        seconds (None: no limit) or whose process dies yields a TaskLost instead."""
        it = iter(items)
        pending: deque[tuple[T, object]] = deque()

        def submit(x: T) -> None:
            pending.append((x, self._pool.schedule(fn, args=(x,), timeout=timeout(x))))

        for x in islice(it, self.workers * ahead):
            submit(x)
        while pending:
            item, fut = pending.popleft()
            try:
                result: R | TaskLost[T] = fut.result()
            except FutureTimeout:
                result = TaskLost(item, "timeout", f"still running after {timeout(item):.0f} s; worker killed")
            except ProcessExpired as e:
                result = TaskLost(item, "crashed", f"worker process died (exit code {e.exitcode})")
            nxt = next(it, _END)
            if nxt is not _END:
                submit(nxt)
            yield result

    def stop(self) -> None:
        self._pool.stop()
        self._pool.join()

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()


_END = object()
