"""Stopping a training run early and resumably: on SIGTERM or SIGINT every rank finishes its step, all
ranks agree to stop after the same step, and the run writes a checkpoint before it exits (EXIT_STOPPED).

The signal handlers only record the signal (salt.interrupt.StopFlag); the trainer asks at each step
boundary, with one all-reduce, whether any rank got one.

What DeepSpeed 0.19's launcher does with these signals (measured on one node, see
tests/test_train_faults.py):
- `deepspeed` (launcher/runner.py) installs no handler on a single node: SIGTERM kills it alone, and
  `deepspeed.launcher.launch` with the ranks trains on, orphaned; SIGINT ends it with a KeyboardInterrupt.
- `deepspeed.launcher.launch` (the ranks' parent), on SIGTERM or SIGINT, sends SIGTERM to one rank's
  process tree at a time, waits up to 30 s for it, SIGKILLs it if it is still alive, then goes on to the
  next rank, and exits 1 whatever the ranks returned. When a rank exits non-zero on its own, it does the
  same to the others and exits with that rank's code.
So under the launcher a rank also watches its launcher (`LauncherWatch`): when `deepspeed` or
`deepspeed.launcher.launch` is gone it stops as on SIGTERM, instead of training on as an orphan; and a
stop (its last step, checkpoint and export) must finish within the launcher's 30 s, or the rank is
SIGKILLed mid-checkpoint (`latest` then still names the previous complete checkpoint).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path

from salt.interrupt import EXIT_STOPPED, StopFlag

__all__ = ["EXIT_STOPPED", "FirstSignal", "LauncherWatch", "collective_failed", "collective_reason"]

LAUNCH_MODULE = "deepspeed.launcher.launch"


class FirstSignal(StopFlag):
    """A StopFlag that keeps the first signal: Ctrl-C under the launcher delivers SIGINT from the
    terminal and then SIGTERM from deepspeed.launcher.launch, and the stop is the user's SIGINT."""

    def _set(self, signum, frame) -> None:
        if self.signame is None:
            super()._set(signum, frame)


def collective_failed(e: BaseException) -> bool:
    """Did a collective fail because another rank is gone? NCCL raises DistError; gloo a plain RuntimeError
    from its transport ("[.../gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:24279: Connection reset
    by peer. This is typically ...", measured with torch 2.14 after `kill -9` of the other rank)."""
    import torch

    return isinstance(e, torch.distributed.DistError) or "/gloo/" in str(e)


def collective_reason(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # field 4; the command name (field 2) may hold spaces


class LauncherWatch:
    """Under `deepspeed` (one node): when the runner or deepspeed.launcher.launch exits, this process
    sends itself SIGTERM, the signal the runner does not forward. Does nothing under any other parent."""

    def __init__(self, poll_s: float = 1.0, announce: bool = False):
        self.poll_s, self.announce = poll_s, announce
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LauncherWatch:
        parent = os.getppid()
        if LAUNCH_MODULE not in _cmdline(parent):
            return self
        runner = _ppid(parent)
        self._thread = threading.Thread(target=self._run, args=(parent, runner), daemon=True,
                                        name="watch-deepspeed-launcher")
        self._thread.start()
        return self

    def _run(self, parent: int, runner: int | None) -> None:
        while not self._done.wait(self.poll_s):
            if os.getppid() != parent or _ppid(parent) != runner:
                if self.announce:
                    print(f"the deepspeed launcher (pid {runner}) exited without stopping the ranks; stopping "
                          "as on SIGTERM", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
