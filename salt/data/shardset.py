"""A shard set on disk: its manifest and every sample's byte ranges, read from the DALI index files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataprep.video_codecs import codec_spec


class ShardSetError(Exception):
    pass


@dataclass(frozen=True)
class SampleRef:
    shard: str  # tar file name
    key: str
    video: tuple[int, int]  # (offset, size) in the tar
    meta: tuple[int, int]
    cls: tuple[int, int] | None


class ShardSet:
    """Sample locations of `shards/NAME` in arrays (cheap for millions of samples) plus the manifest.

    Reads payload bytes with positioned reads, so any number of threads can share one instance.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.exists():
            hint = " (run `python -m dataprep.shards --merge` for a --part job)" if any(
                self.root.glob("manifest-p*.json")) else ""
            raise ShardSetError(f"no shard set at {self.root}: manifest.json is missing{hint}")
        self.manifest = json.loads(manifest_path.read_text())
        if not self.manifest.get("shards") or self.manifest.get("num_samples", 0) == 0:
            raise ShardSetError(f"shard set {self.root} is empty (0 samples)")
        self.codec = codec_spec(self.manifest["codec"])
        self.video_ext = self.manifest["video_ext"]
        self.classes: list[str] = self.manifest.get("classes", [])
        self.shard_names: list[str] = [s["path"] for s in self.manifest["shards"]]
        shard_of, keys, offsets = [], [], []
        for i, s in enumerate(self.manifest["shards"]):
            tar, idx = self.root / s["path"], self.root / s["index"]
            for p in (tar, idx):
                if not p.exists():
                    raise ShardSetError(f"shard set {self.root}: {p.name} listed in manifest.json is missing")
            if tar.stat().st_size != s["bytes"]:
                raise ShardSetError(f"shard {tar} has {tar.stat().st_size} bytes, manifest says {s['bytes']}: "
                                    "truncated or replaced")
            for key, comps in _read_index(idx):
                try:
                    v, m = comps[self.video_ext], comps["json"]
                except KeyError as e:
                    raise ShardSetError(f"{idx}: sample {key} has no .{e.args[0]} component") from None
                c = comps.get("cls", (-1, 0))
                shard_of.append(i)
                keys.append(key)
                offsets.append((*v, *m, *c))
        self.keys: list[str] = keys
        self._shard = np.asarray(shard_of, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 6)  # video, meta, cls (offset, size)
        if len(self.keys) != self.manifest["num_samples"]:
            raise ShardSetError(f"{self.root}: index files list {len(self.keys)} samples, manifest "
                                f"{self.manifest['num_samples']}")
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def ref(self, i: int) -> SampleRef:
        o = self._offsets[i]
        return SampleRef(self.shard_names[self._shard[i]], self.keys[i], (int(o[0]), int(o[1])),
                         (int(o[2]), int(o[3])), (int(o[4]), int(o[5])) if o[4] >= 0 else None)

    @property
    def shard_ids(self) -> np.ndarray:
        """(N,) int32: each sample's shard number (non-decreasing)."""
        return self._shard

    def shard_of(self, i: int) -> str:
        return self.shard_names[self._shard[i]]

    def _read(self, i: int, col: int) -> bytes:
        shard = int(self._shard[i])
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds.setdefault(shard, os.open(self.root / self.shard_names[shard], os.O_RDONLY))
        off, size = int(self._offsets[i, col]), int(self._offsets[i, col + 1])
        return os.pread(fd, size, off)

    def video_bytes(self, i: int) -> bytes:
        return self._read(i, 0)

    def meta(self, i: int) -> dict:
        return json.loads(self._read(i, 2))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __getstate__(self) -> dict:  # worker processes open their own descriptors
        state = self.__dict__.copy()
        state["_fds"] = {}
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read_index(path: Path):
    """Yields (key, {ext: (offset, size)}) from a DALI webdataset index (v1.2: `ext offset size name`)."""
    with open(path) as f:
        header = f.readline().split()
        if len(header) != 2 or header[0] != "v1.2":
            raise ShardSetError(f"{path}: not a DALI webdataset index v1.2 (header {' '.join(header)!r})")
        for line in f:
            parts = line.split()
            if not parts:
                continue
            comps = {}
            key = None
            for j in range(0, len(parts), 4):
                ext, off, size, name = parts[j:j + 4]
                comps[ext] = (int(off), int(size))
                key = name[: name.find(".", name.rfind("/") + 1)]
            yield key, comps
