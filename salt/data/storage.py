"""Where a shard set's bytes live: a local folder, or any URL fsspec opens (`s3://bucket/name`,
`https://host/name`, `gs://…`), read by byte ranges taken from the DALI index files.

A sample is read with positioned reads (local) or range requests (remote), so a loader never fetches a
whole shard to get one clip. Remote reads go through fsspec's block cache: each open shard keeps at
most BLOCKS blocks of BLOCK_SIZE bytes (its read-ahead), and each thread keeps at most OPEN_PER_THREAD
shards open, so the memory a remote shard set costs is bounded whatever its size.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

BLOCK_SIZE = 2 << 20  # bytes per range request and cached block
BLOCKS = 8  # cached blocks per open remote shard: 16 MiB
OPEN_PER_THREAD = 4  # remote shards one thread keeps open (least recently used closed first)


def is_url(root: str | Path) -> bool:
    return "://" in str(root)


class StorageError(OSError):
    pass


class LocalStore:
    """Files of one folder, read with os.pread on descriptors shared by every thread."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.root)

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def open(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.name for p in self.root.glob(pattern))

    def pread(self, name: str, offset: int, size: int) -> bytes:
        fd = self._fds.get(name)
        if fd is None:
            with self._lock:
                fd = self._fds.get(name)
                if fd is None:
                    fd = self._fds[name] = os.open(self.root / name, os.O_RDONLY)
        return os.pread(fd, size, offset)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __getstate__(self) -> dict:  # worker processes open their own descriptors
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])


class RemoteStore:
    """Objects under one URL prefix, through fsspec. Handles are per thread (fsspec files are not
    thread-safe), kept in a small LRU."""

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise StorageError(f"{url}: reading shards from a URL needs fsspec (pip install -e '.[remote]')") from None
        self.url = url.rstrip("/")
        try:
            self.fs, self.path = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            raise StorageError(f"{url}: {e} (pip install -e '.[remote]' brings s3fs and aiohttp)") from None
        self._local = threading.local()
        self._all: list[OrderedDict] = []
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return self.url

    def _key(self, name: str) -> str:
        return f"{self.path}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._key(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self._key(name)))

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self._key(name))

    def open(self, name: str) -> BinaryIO:
        return self.fs.open(self._key(name), "rb", block_size=BLOCK_SIZE, cache_type="readahead")

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.glob(self._key(pattern)))

    def _handles(self) -> OrderedDict:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = OrderedDict()
            with self._lock:
                self._all.append(handles)
        return handles

    def pread(self, name: str, offset: int, size: int) -> bytes:
        handles = self._handles()
        f = handles.get(name)
        if f is None:
            f = self.fs.open(self._key(name), "rb", block_size=BLOCK_SIZE, cache_type="blockcache",
                             cache_options={"maxblocks": BLOCKS})
            handles[name] = f
            while len(handles) > OPEN_PER_THREAD:
                handles.popitem(last=False)[1].close()
        else:
            handles.move_to_end(name)
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise StorageError(f"{self._key(name)}: asked for {size} bytes at {offset}, got {len(data)}")
        return data

    def close(self) -> None:
        with self._lock:
            for handles in self._all:
                for f in handles.values():
                    f.close()
                handles.clear()

    def __getstate__(self) -> dict:  # worker processes open their own handles
        state = self.__dict__.copy()
        state["_local"], state["_all"], state["_lock"] = None, [], None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local, self._lock = threading.local(), threading.Lock()


def open_store(root: str | Path) -> LocalStore | RemoteStore:
    return RemoteStore(str(root)) if is_url(root) else LocalStore(root)
