"""A run folder's checkpoints on disk: which are complete, and which one `latest` names (plain files, no
DeepSpeed: the export command and the trainer read them the same way).

DeepSpeed writes a checkpoint's files; after every rank has finished, rank 0 marks the folder complete
(`COMPLETE`) and only then replaces `latest`. A folder without its mark is a checkpoint a run stopped
writing: never loaded.
"""

from __future__ import annotations

from pathlib import Path

COMPLETE = "COMPLETE"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def complete_tags(folder: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    return sorted(p.name for p in folder.glob("step_*") if (p / COMPLETE).exists())


def incomplete_tags(folder: Path) -> list[str]:
    """Checkpoint folders without their mark: a run stopped (killed) while writing them."""
    return sorted(p.name for p in folder.glob("step_*") if p.is_dir() and not (p / COMPLETE).exists())


def latest_tag(folder: Path) -> str | None:
    pointer = folder / "latest"
    if pointer.exists():
        tag = pointer.read_text().strip()
        if (folder / tag / COMPLETE).exists():
            return tag
    tags = complete_tags(folder)
    return tags[-1] if tags else None
