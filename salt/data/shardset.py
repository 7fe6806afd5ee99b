"""A shard set on disk: its manifest and every sample's byte ranges, read from the DALI index files.

Integrity: opening a shard set checks that every shard and index exists and that each tar has the size
manifest.json records. The first read from a shard in a process also hashes the whole tar and compares it
with the manifest's sha256 (`verify=True`, the default): damage that keeps the size (a flipped bit, a
file replaced by another of the same length) is refused with an error naming the shard, instead of being
decoded into training batches. The hash costs one sequential read of the shard at sha256 speed (measured on
the 2-core CI machine, SHA-NI: 1.4 GB/s per core from the page cache, 0.6 GB/s from its disk), once per
shard and process; `verify=False` (data.verify_shards=false) checks sizes only. `verify_shard_set` checks a
whole set in full (sizes, hashes, and the index files against the tars).
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salt.atomic import file_sha256
from salt.data.codecs import codec_spec
from salt.data.storage import RetryPolicy, StorageError, is_url, open_store, store_sha256


class ShardSetError(Exception):
    pass


class ShardIntegrityError(ShardSetError):
    """A shard tar whose bytes are not the ones manifest.json records (damaged or replaced)."""

    def __init__(self, message: str):
        # torch's DataLoader re-raises a worker's exception as type(text with the worker's traceback): keep
        # the one line that says what is wrong
        if "Traceback" in message:
            message = message.strip().splitlines()[-1].split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


_warned_unhashed: set[str] = set()  # shard sets already reported as having no sha256 (once per process)


def hash_mismatch_message(root: Path, name: str) -> str:
    return (f"shard {root / name} does not match the sha256 recorded in manifest.json: damaged or replaced; "
            f"copy it again from where the shard set came from, or rebuild the shard set with its "
            f"`python -m dataprep.shards` command (`python -m dataprep.shards --verify {root}` lists every "
            "damaged shard)")


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
    verify: hash each shard on its first read in this process and refuse one that does not match the
    manifest's sha256 (ShardIntegrityError, naming the shard). Off, only the sizes are checked.
    """

    def __init__(self, root: str | Path, verify: bool = True, retry: RetryPolicy | None = None):
        """retry: how a remote shard set's reads ride out faults (salt.data.storage)."""
        self.root: Path | str = str(root).rstrip("/") if is_url(root) else Path(root)
        self.verify = verify
        try:
            self.store = open_store(root, retry)
            if not self.store.exists("manifest.json"):
                hint = " (run `python -m dataprep.shards --merge` for a --part job)" if _has_parts(self.store) else ""
                raise ShardSetError(f"no shard set at {self.root}: manifest.json is missing{hint}")
            self.manifest = json.loads(self.store.read_bytes("manifest.json"))
        except (OSError, ValueError) as e:
            raise ShardSetError(f"shard set {self.root}: cannot read manifest.json ({e})") from None
        if not self.manifest.get("shards") or self.manifest.get("num_samples", 0) == 0:
            raise ShardSetError(f"shard set {self.root} is empty (0 samples)")
        self.codec = codec_spec(self.manifest["codec"])
        self.video_ext = self.manifest["video_ext"]
        self.classes: list[str] = self.manifest.get("classes", [])
        hflip = self.manifest.get("label_hflip")  # class -> class under a left-right mirror; None: unchanged
        self.label_hflip: list[int] | None = [self.classes.index(hflip[c]) for c in self.classes] if hflip else None
        self.shard_names: list[str] = [s["path"] for s in self.manifest["shards"]]
        shard_of, keys, offsets = [], [], []
        for i, s in enumerate(self.manifest["shards"]):
            idx = f"{self.root}/{s['index']}"
            try:
                size = self.store.size(s["path"])
                index_text = self.store.read_bytes(s["index"]).decode()
            except FileNotFoundError:
                missing = s["path"] if not self.store.exists(s["path"]) else s["index"]
                raise ShardSetError(f"shard set {self.root}: {missing} listed in manifest.json is missing") from None
            if size != s["bytes"]:
                raise ShardSetError(f"shard {self.root}/{s['path']} has {size} bytes, manifest says {s['bytes']}: "
                                    "truncated or replaced")
            for key, comps in _parse_index(index_text, idx):
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
        self._verified: set[int] = set()  # shards hashed and found intact in this process (or its parent)
        self._damaged: dict[int, str] = {}  # shard -> error message
        self._lock_pid, self._locks = -1, {}
        unhashed = any("sha256" not in s for s in self.manifest["shards"])
        if verify and unhashed and str(self.root) not in _warned_unhashed:
            _warned_unhashed.add(str(self.root))
            print(f"warning: shard set {self.root}: manifest.json records no sha256 for some shards; their "
                  "contents are not checked (only their sizes)", file=sys.stderr, flush=True)

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

    def _lock(self, shard: int) -> threading.Lock:
        """This process's lock for hashing `shard` (locks copied by a fork may be held by a thread that
        did not come along, so a new process makes its own)."""
        if self._lock_pid != os.getpid():
            self._lock_pid, self._locks = os.getpid(), {}
        return self._locks.setdefault(shard, threading.Lock())

    def check_shard(self, shard: int) -> None:
        """Hash shard number `shard` once (per process) and raise ShardIntegrityError if it is not the
        manifest's; later calls cost a set lookup."""
        if shard in self._verified:
            return
        with self._lock(shard):
            if shard in self._verified:
                return
            if shard in self._damaged:
                raise ShardIntegrityError(self._damaged[shard])
            info = self.manifest["shards"][shard]
            want = info.get("sha256")
            if want is not None:
                try:
                    got = store_sha256(self.store, info["path"])
                except StorageError:
                    raise  # the server, not the shard: the loaders report it as such (RemoteReadError)
                except OSError as e:
                    raise ShardSetError(f"shard {self.root}/{info['path']} cannot be read: {e}") from None
                if got != want:
                    self._damaged[shard] = hash_mismatch_message(self.root, info["path"])
                    raise ShardIntegrityError(self._damaged[shard])
            self._verified.add(shard)

    def _read(self, i: int, col: int) -> bytes:
        shard = int(self._shard[i])
        if self.verify and shard not in self._verified:
            self.check_shard(shard)
        off, size = int(self._offsets[i, col]), int(self._offsets[i, col + 1])
        return self.store.pread(self.shard_names[shard], off, size)

    def video_bytes(self, i: int) -> bytes:
        return self._read(i, 0)

    def meta(self, i: int) -> dict:
        return json.loads(self._read(i, 2))

    def close(self) -> None:
        self.store.close()

    def __getstate__(self) -> dict:  # worker processes open their own descriptors (the store's pickling)
        state = self.__dict__.copy()
        state["_lock_pid"], state["_locks"] = -1, {}  # shards already verified stay verified
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def verify_shard_set(root: str | Path) -> list[str]:
    """Checks a shard set in full: manifest, each shard's presence, size and sha256, and that each index
    file lists exactly the tar's members (names, offsets, sizes) and the manifest's sample count.
    Returns the problems, one line each naming the file; empty when the set is whole."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return [f"{manifest_path} is missing: not a shard set"]
    except (OSError, ValueError) as e:
        return [f"{manifest_path} is unreadable: {e}"]
    problems: list[str] = []
    video_ext = manifest.get("video_ext")
    total = 0
    for info in manifest.get("shards", []):
        tar, idx = root / info["path"], root / info["index"]
        if not tar.exists():
            problems.append(f"{tar}: listed in manifest.json but missing")
            continue
        size = tar.stat().st_size
        if size != info["bytes"]:
            problems.append(f"{tar}: {size} bytes, manifest.json says {info['bytes']}: truncated or replaced")
            continue
        if "sha256" not in info:
            problems.append(f"{tar}: manifest.json records no sha256 (contents not checked)")
        elif file_sha256(tar) != info["sha256"]:
            problems.append(f"{tar}: does not match the sha256 recorded in manifest.json: damaged or replaced")
            continue
        if not idx.exists():
            problems.append(f"{idx}: listed in manifest.json but missing")
            continue
        try:
            listed = list(_read_index(idx))
        except (ShardSetError, ValueError, IndexError) as e:
            problems.append(f"{idx}: unreadable index ({e})")
            continue
        total += len(listed)
        if len(listed) != info.get("samples", len(listed)):
            problems.append(f"{idx}: lists {len(listed)} samples, manifest.json says {info['samples']}")
        try:
            members = tar_members(tar)
        except (tarfile.TarError, OSError) as e:
            problems.append(f"{tar}: not a readable tar ({e})")
            continue
        if listed != members:
            pairs = enumerate(zip(listed, members, strict=False))
            j = next((j for j, (a, b) in pairs if a != b), min(len(listed), len(members)))
            bad = (listed[j] if j < len(listed) else members[j])[0]
            problems.append(f"{idx}: does not match {tar.name} (first difference at sample {bad}): damaged; "
                            "rebuild it from the tar")
            continue
        missing = [key for key, comps in listed if video_ext not in comps or "json" not in comps]
        if missing:
            problems.append(f"{idx}: sample {missing[0]} has no .{video_ext} or .json component")
    if "num_samples" in manifest and total != manifest["num_samples"] and not problems:
        problems.append(f"{root}: index files list {total} samples, manifest.json {manifest['num_samples']}")
    return problems


def tar_members(tar: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {ext: (offset, size)}) per sample, from the tar's headers: what its index must say."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    with tarfile.open(tar) as t:
        for m in t:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            dot = base.find(".")
            if dot <= 0:
                continue
            key, ext = m.name[: len(m.name) - len(base) + dot], base[dot + 1:]
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][ext] = (m.offset_data, m.size)
    return samples


def _read_index(path: Path):
    """Yields (key, {ext: (offset, size)}) from a DALI webdataset index file (v1.2: `ext offset size name`)."""
    return _parse_index(Path(path).read_text(), path)


def _parse_index(text: str, where: str | Path):
    """The same from the index's text (read from a local file or a URL)."""
    lines = iter(text.splitlines())
    header = next(lines, "").split()
    if len(header) != 2 or header[0] != "v1.2":
        raise ShardSetError(f"{where}: not a DALI webdataset index v1.2 (header {' '.join(header)!r})")
    for line in lines:
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


def _has_parts(store) -> bool:
    try:
        return bool(store.glob("manifest-p*.json"))
    except (OSError, NotImplementedError, ValueError):  # a web server lists nothing
        return False
