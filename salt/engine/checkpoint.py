"""Checkpoints through DeepSpeed, with a `latest` pointer that only ever names a complete checkpoint.

DeepSpeed writes the checkpoint's files; after every rank has finished, rank 0 marks the folder
complete and only then replaces `latest` (atomically). A crash mid-save leaves `latest` at the
previous checkpoint; loading also skips any folder without its mark. A write that fails (a full disk)
raises WriteError naming the checkpoint, after removing the half-written folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from salt.atomic import write_error, write_text_atomic
from salt.engine.collectives import barrier
from salt.engine.stopping import collective_failed
from salt.run_folder import COMPLETE, complete_tags, incomplete_tags, latest_tag, tag_for

__all__ = ["COMPLETE", "CheckpointError", "complete_tags", "incomplete_tags", "latest_tag", "load_checkpoint",
           "save_checkpoint", "tag_for"]

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (damaged, or written by another model or DeepSpeed config)."""


def save_checkpoint(engine, folder: Path, step: int, client_state: dict[str, Any], keep: int,
                    is_main: bool) -> str:
    tag = tag_for(step)
    path = folder / tag
    try:
        folder.mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(folder), tag=tag, client_state=client_state, save_latest=False)
        barrier()
        if is_main:
            write_text_atomic(path / COMPLETE, f"{step}\n")
            write_text_atomic(folder / "latest", tag)
    except (OSError, RuntimeError) as e:
        if collective_failed(e):  # another rank is gone: not a write error
            raise
        # a rank that could not write its part removes the folder; `latest` still names the previous one
        shutil.rmtree(path, ignore_errors=True)
        raise write_error(path, e) from e
    if is_main:
        for old in complete_tags(folder)[:-max(1, keep)]:
            shutil.rmtree(folder / old, ignore_errors=True)
    barrier()
    return tag


def load_checkpoint(engine, folder: Path, tag: str) -> dict[str, Any]:
    try:
        path, client_state = engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as e:
        if collective_failed(e):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load checkpoint {folder / tag}: {reason}; remove it to resume from an "
                              "earlier one, or start a new --run-dir") from None
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {folder / tag}")
    return client_state or {}
