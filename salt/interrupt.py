"""Stopping a long job on SIGTERM or SIGINT without losing work, the same way in every job.

Schedulers pre-empt with SIGTERM (Slurm, Kubernetes) and people with Ctrl-C. Every job exits with
EXIT_STOPPED after a signal, once its finished work is safely on disk: "stopped early, resumable —
run the same command again" (75 is EX_TEMPFAIL, the code for "try again later").
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Raised in the main thread by `raise_on_stop_signals` when a stop signal arrives."""

    def __init__(self, signame: str):
        super().__init__(f"stopped by {signame}")
        self.signame = signame


@contextmanager
def raise_on_stop_signals() -> Iterator[Callable[[], None]]:
    """Inside the block, SIGTERM and SIGINT raise Stopped where the main thread is (for jobs whose work
    units are cheap to redo: a shard job loses at most the shard it was filling). Outside the main
    thread this does nothing.

    A signal that lands inside an object's finalizer (`__del__`) has its exception ignored by Python;
    the signal is remembered, and the block's value, a `check()` to call at safe points, raises it
    there; the end of the block raises it too."""
    pending: list[str] = []

    def check() -> None:
        if pending:
            raise Stopped(pending[0])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if not pending:
            pending.append(name)
        raise Stopped(name)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield check
        check()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class StopFlag:
    """Records a stop signal for a loop that checks it at a safe point (a training step boundary)."""

    def __init__(self) -> None:
        self.signame: str | None = None
        self._old: dict = {}

    def __bool__(self) -> bool:
        return self.signame is not None

    def _set(self, signum, _frame) -> None:
        self.signame = signal.Signals(signum).name

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._set) for s in STOP_SIGNALS}
        return self

    def uninstall(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
