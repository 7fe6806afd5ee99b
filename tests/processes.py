"""Waiting on processes in tests: bounded polls, so a process that never goes away fails the test."""

from __future__ import annotations

import os
import time


def group_gone(pgid: int, timeout: float = 60) -> bool:
    """Whether every process of the group has exited within `timeout` s (none left behind as an orphan)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def cpu_ranks_env(**extra: str) -> dict[str, str]:
    """The environment of the tests' multi-rank launches: their ranks run on the CPU (gloo) on purpose, so
    they run on any machine. salt follows DS_ACCELERATOR everywhere (model, collectives and DALI), so on a
    GPU machine these ranks are CPU ranks throughout, not CPU models fed CUDA batches."""
    return {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1", **extra}
