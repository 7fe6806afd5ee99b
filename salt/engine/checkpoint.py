"""Checkpoints through DeepSpeed, with a `latest` pointer that only ever names a complete checkpoint.

DeepSpeed writes the checkpoint's files; after every rank has finished, rank 0 marks the folder
complete and only then replaces `latest` (atomically). A crash mid-save leaves `latest` at the
previous checkpoint; loading also skips any folder without its mark.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from salt.atomic import write_text_atomic
from salt.engine.distributed import barrier

COMPLETE = "COMPLETE"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(engine, folder: Path, step: int, client_state: dict[str, Any], keep: int,
                    is_main: bool) -> str:
    tag = tag_for(step)
    folder.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(folder), tag=tag, client_state=client_state, save_latest=False)
    barrier()
    if is_main:
        write_text_atomic(folder / tag / COMPLETE, f"{step}\n")
        write_text_atomic(folder / "latest", tag)
        for old in complete_tags(folder)[:-max(1, keep)]:
            shutil.rmtree(folder / old, ignore_errors=True)
    barrier()
    return tag


def complete_tags(folder: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    return sorted(p.name for p in folder.glob("step_*") if (p / COMPLETE).exists())


def latest_tag(folder: Path) -> str | None:
    pointer = folder / "latest"
    if pointer.exists():
        tag = pointer.read_text().strip()
        if (folder / tag / COMPLETE).exists():
            return tag
    tags = complete_tags(folder)
    return tags[-1] if tags else None


def load_checkpoint(engine, folder: Path, tag: str) -> dict[str, Any]:
    path, client_state = engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {folder / tag}")
    return client_state or {}
