"""Atomic file writes: a temporary name in the same folder, then a rename, so a reader (or a resumed
job) never sees half a file. Also the whole-file hash recorded beside such files, and the one-line
error every job reports when a write fails (a full disk names the path and says so)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Raises WriteError (naming `path`) when the disk is full; the old file, if any, stays as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from e
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class WriteError(OSError):
    """A file could not be written (a full disk, above all): one line that names the path and says why."""

    def __init__(self, path: str | Path, reason: str, errno_: int | None = None):
        super().__init__(errno_, f"cannot write {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return self.strerror


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def write_error(path: str | Path, exc: BaseException, low_space_bytes: int = 64 << 20) -> WriteError:
    """A WriteError for `exc` raised while writing `path`. Some writers (torch.save's C++ stream) lose the
    errno ("basic_ios::clear: iostream error"), so a full disk is also recognised by what is left on it."""
    if isinstance(exc, WriteError):
        return exc
    path = Path(path)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(path, "no space left on device", code)
    try:
        free = shutil.disk_usage(_existing_parent(path)).free
    except OSError:
        free = None
    if free is not None and free < low_space_bytes:
        return WriteError(path, f"no space left on device ({free // 1024} KiB free)", errno.ENOSPC)
    if isinstance(exc, OSError) and exc.strerror:
        return WriteError(path, exc.strerror.lower(), code)
    return WriteError(path, f"{type(exc).__name__}: {exc}", code)


@contextmanager
def reporting_write_errors(path: str | Path):
    """Turns any failure inside the block into a one-line WriteError naming `path`."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        raise write_error(path, e) from e
