"""The resume journal of a shard job: one record per finished shard, written after the shard is in
place. A rerun continues after the last recorded shard; anything later is redone.

The journal lives in the job's local folder; `present(name, size)` says whether a finished shard is in
place (a file of that size, or an object of an object-store output), and `on_write(name)` publishes each
record once written (uploaded beside the shards for an object-store output, so a rerun elsewhere resumes)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salt.atomic import write_json_atomic
from salt.resume import changed_settings, describe_changes


@dataclass
class Segment:
    """What happened between two shard boundaries: inputs completed, inputs rejected, files that
    turned out not to be videos."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class JobMismatch(Exception):
    pass


def _local_present(folder: Path) -> Callable[[str, int], bool]:
    def present(name: str, size: int) -> bool:
        path = folder / name
        return path.exists() and path.stat().st_size == size
    return present


class Journal:
    def __init__(self, directory: Path, present: Callable[[str, int], bool] | None = None,
                 on_write: Callable[[str], None] | None = None, on_remove: Callable[..., None] | None = None):
        """present(file name, bytes): whether a finished shard is in place (default: beside the journal);
        on_write(name) / on_remove(*names), names relative to the job's folder: called after each record is
        written or dropped (an object-store output mirrors the journal)."""
        self.dir = directory
        self.present = present or _local_present(directory.parent)
        self.on_write = on_write or (lambda name: None)
        self.on_remove = on_remove or (lambda *names: None)

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        write_json_atomic(path, record)
        self.on_write(str(path.relative_to(self.dir.parent)))

    @property
    def job_file(self) -> Path:
        return self.dir / "job.json"

    @property
    def end_file(self) -> Path:
        return self.dir / "end.json"

    def exists(self) -> bool:
        return self.job_file.exists()

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def begin(self, job: dict[str, Any]) -> None:
        """Record the job's options; refuse to continue a journal written for different ones."""
        if self.exists():
            changes = changed_settings(json.loads(self.job_file.read_text()), job)
            if changes:
                raise JobMismatch(f"{self.dir.parent} holds an unfinished or finished job with other settings "
                                  f"({describe_changes(changes)}). Rerun with the same settings to resume, or pass "
                                  "--overwrite.")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write(self.job_file, job)

    def segments(self) -> list[dict[str, Any]]:
        """Finished shards in order, up to the first one whose tar is missing or of another size;
        records after that point (and the end mark) are dropped, since that work will be redone."""
        out = []
        records = sorted(self.dir.glob("shard-*.json"))
        for n, p in enumerate(records):
            rec = json.loads(p.read_text()) if p.name == f"shard-{n:06d}.json" else None
            if rec is None or not self.present(rec["shard"]["path"], rec["shard"]["bytes"]):
                for stale in records[n:]:
                    stale.unlink()
                self.end_file.unlink(missing_ok=True)
                self.on_remove(*[str(f.relative_to(self.dir.parent)) for f in [*records[n:], self.end_file]])
                break
            out.append(rec)
        return out

    def write_segment(self, number: int, shard: dict[str, Any], seg: Segment, next_pos: tuple[int, int]) -> None:
        self._write(self.dir / f"shard-{number:06d}.json",
                    {"shard": shard, "inputs": seg.inputs, "failures": seg.failures, "skipped": seg.skipped,
                     "next": list(next_pos)})

    def write_end(self, seg: Segment) -> None:
        self._write(self.end_file, {"inputs": seg.inputs, "failures": seg.failures, "skipped": seg.skipped})

    def complete(self) -> bool:
        return self.end_file.exists()

    def tail(self) -> Segment:
        rec = json.loads(self.end_file.read_text())
        return Segment(rec["inputs"], rec["failures"], rec.get("skipped", []))
