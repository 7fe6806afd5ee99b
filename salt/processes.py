"""How every worker process of the project starts and ends.

Workers are started with `spawn` (DataLoader workers from a `forkserver`): forking a process that already runs torch, DALI or OpenMP threads
copies locks some thread held, and the child can wait on them forever (it did, in the test suite).
A worker polls its parent and exits when the parent is gone, so `kill -9` of a job leaves no orphans,
and ignores SIGINT, so that Ctrl-C reaches the job, which then stops its workers itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

START_METHOD = "spawn"
PARENT_POLL_S = 0.5


def mp_context() -> multiprocessing.context.BaseContext:
    """The start method of every process pool of the project."""
    return multiprocessing.get_context(START_METHOD)


def loader_context(preload: list[str]) -> multiprocessing.context.BaseContext:
    """For DataLoader workers, started anew every epoch: `forkserver`, whose server is a fresh process
    without threads that imports `preload` (torch, the dataset's module) once, so each worker forks from
    it in milliseconds instead of importing torch for a second or more as a spawned one would."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    return ctx


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def worker_init(parent: int) -> None:
    """Initializer of a worker process (pass `os.getpid()` of the parent): die with the parent, leave
    Ctrl-C to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()
