"""Worker functions for the pool and shard-job fault tests. They live in a module of their own so that
spawned worker processes can import them by name."""

from __future__ import annotations

import os
import time

from dataprep import shard_job


def sleep_then_echo(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die_if_odd(code: int) -> int:
    """Even codes return; odd ones end the worker with that exit code, negative ones by that signal.
    (A worker that exits with 0 mid-task is not seen as dead by pebble; the task's time budget ends it.)"""
    if code < 0:
        os.kill(os.getpid(), -code)
    if code % 2:
        os._exit(code)
    return code


def hang_on_named(args):
    """The shard job's transcode task, except that inputs whose name contains 'hang' never finish."""
    if "hang" in os.path.basename(args[0].path):
        time.sleep(3600)
    return shard_job._work(args)


def start_method(_: object) -> str:
    import multiprocessing

    return multiprocessing.get_start_method()
