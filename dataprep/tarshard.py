"""WebDataset tar shards written atomically, each with the index DALI's `fn.readers.webdataset` reads."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import webdataset as wds

from salt.atomic import file_sha256, reporting_write_errors
from salt.data.shardset import tar_members

DALI_INDEX_VERSION = "v1.2"
TAR_MTIME = 0.0  # fixed member times keep shard bytes a function of their contents


@dataclass(frozen=True)
class ShardInfo:
    path: str  # file name inside the shard folder
    index: str  # DALI index file name
    samples: int
    bytes: int
    sha256: str
    first_key: str
    last_key: str

    def to_json(self) -> dict:
        return asdict(self)


def tmp_name(final: Path) -> Path:
    """Where an unfinished file lives: hidden and with a suffix no reader globs for."""
    return final.with_name(f".{final.name}.partial")


def write_dali_index(tar_path: Path, index_path: Path) -> int:
    """DALI's wds2idx format v1.2: a header line, then per sample `ext offset size name` for each
    component, offsets pointing at the member data. Read from the tar itself, so it cannot disagree
    with it. Returns the sample count."""
    samples = [" ".join(f"{ext} {offset} {size} {key}.{ext}" for ext, (offset, size) in comps.items())
               for key, comps in tar_members(tar_path)]
    tmp = tmp_name(index_path)
    with open(tmp, "w") as f:
        f.write(f"{DALI_INDEX_VERSION} {len(samples)}\n")
        f.writelines(s + "\n" for s in samples)
    os.replace(tmp, index_path)
    return len(samples)


class ShardWriter:
    """Collects samples into `<final>` via a hidden partial file; `close()` writes the index and then
    renames the tar into place, so a finished-looking tar always has its index beside it."""

    def __init__(self, final: Path):
        self.final = final
        self.tmp = tmp_name(final)
        self._file = open(self.tmp, "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=TAR_MTIME, user="salt", group="salt")
        self.samples = 0
        self.bytes = 0
        self.first_key: str | None = None
        self.last_key: str | None = None

    def write(self, key: str, components: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/'")
        with reporting_write_errors(self.final):
            self._tar.write({"__key__": key, **components})
        self.samples += 1
        self.bytes = self._file.tell()
        self.first_key = self.first_key or key
        self.last_key = key

    def close(self) -> ShardInfo:
        """Raises WriteError naming the shard or its index when the disk is full; nothing is renamed then."""
        index = self.final.with_suffix(".idx")
        with reporting_write_errors(self.final):
            self._tar.close()  # also closes the file
        try:
            with reporting_write_errors(index):
                write_dali_index(self.tmp, index)
        except BaseException:
            tmp_name(index).unlink(missing_ok=True)
            raise
        digest = file_sha256(self.tmp)
        size = self.tmp.stat().st_size
        os.replace(self.tmp, self.final)
        return ShardInfo(self.final.name, index.name, self.samples, size, digest,
                         self.first_key or "", self.last_key or "")

    def abort(self) -> None:
        try:
            self._tar.close()
        except OSError:
            pass  # a full disk: the partial file goes anyway
        finally:
            self.tmp.unlink(missing_ok=True)
