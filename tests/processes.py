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
