"""Where a shard set's bytes live: a local folder, or any URL fsspec opens (`s3://bucket/name`,
`https://host/name`, `gs://…`), read by byte ranges taken from the DALI index files.

A sample is read with positioned reads (local) or range requests (remote), so a loader never fetches a
whole shard to get one clip. Remote reads go through fsspec's block cache: each open shard keeps at
most BLOCKS blocks of BLOCK_SIZE bytes (its read-ahead), and each thread keeps at most OPEN_PER_THREAD
shards open, so the memory a remote shard set costs is bounded whatever its size.

Faults (throttling, resets, stalls, a server that restarts) are retried with exponential backoff and
jitter, up to `RetryPolicy.attempts` per request, by the layer that can:
- s3://: botocore's standard retry mode (throttling such as 503 SlowDown and 429, 5xx, connection errors,
  read timeouts; full-jitter backoff, at most 20 s between attempts) for each request, and s3fs's own
  retries for a body cut short after the response began;
- http(s)://: fsspec and aiohttp retry nothing, so `RemoteStore` retries each range read itself (the same
  full-jitter schedule), reopening the connection.
Every retry is counted (`retry_count()`, per process); a request that fails `attempts` times raises
StorageError naming the URL and the budget.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BLOCK_SIZE = 2 << 20  # bytes per range request and cached block
BLOCKS = 8  # cached blocks per open remote shard: 16 MiB
OPEN_PER_THREAD = 4  # remote shards one thread keeps open (least recently used closed first)


def is_url(root: str | Path) -> bool:
    return "://" in str(root)


class StorageError(OSError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    """How a remote store rides out faults: attempts per request, and the connect/read timeout (a stalled
    server counts as a failed attempt after it)."""

    attempts: int = 10
    timeout_s: float = 20.0
    max_backoff_s: float = 20.0  # botocore's cap on one wait

    def backoff(self, attempt: int) -> float:
        """Full jitter, as botocore's standard mode: uniform in [0, min(cap, 2**attempt)) seconds."""
        return random.uniform(0.0, min(self.max_backoff_s, 2.0 ** attempt))


_retries = [0]  # this process's retries of remote requests, all stores
_retries_lock = threading.Lock()


def retry_count() -> int:
    """Retries of remote requests made by this process so far (every store, every layer)."""
    return _retries[0]


def _count(n: int = 1) -> None:
    with _retries_lock:
        _retries[0] += n


class _S3RetryLog(logging.Handler):
    """Counts s3fs's own retries (a body cut short), which s3fs reports only in its debug log."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(("Retryable error", "Client error (maybe retryable)")):
            _count()


def _count_s3fs_retries() -> None:
    log = logging.getLogger("s3fs")
    if not any(isinstance(h, _S3RetryLog) for h in log.handlers):
        log.addHandler(_S3RetryLog(logging.DEBUG))
        log.setLevel(min(log.level or logging.DEBUG, logging.DEBUG))
        log.propagate = False  # its debug lines stay out of the program's output


def _count_botocore_retries(**kwargs) -> None:
    parsed = kwargs.get("parsed") or {}
    _count(int((parsed.get("ResponseMetadata") or {}).get("RetryAttempts", 0)))


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


S3FS_BODY_RETRIES = 3


def _fs_options(url: str, policy: RetryPolicy) -> dict:
    """fsspec's options for `url` with the policy's retries and timeouts."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        # botocore retries each request `attempts` times; s3fs re-reads a body cut short (its own loop,
        # around botocore's) at most S3FS_BODY_RETRIES times
        return {"config_kwargs": {
            "retries": {"mode": "standard", "max_attempts": policy.attempts},
            "connect_timeout": policy.timeout_s, "read_timeout": policy.timeout_s}}
    if scheme in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=policy.timeout_s,
                                                                  sock_read=policy.timeout_s)}}
    return {}


class RemoteStore:
    """Objects under one URL prefix, through fsspec. Handles are per thread (fsspec files are not
    thread-safe), kept in a small LRU."""

    def __init__(self, url: str, policy: RetryPolicy | None = None):
        try:
            import fsspec
        except ImportError:
            raise StorageError(f"{url}: reading shards from a URL needs fsspec (pip install -e '.[remote]')") from None
        self.url = url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.scheme = self.url.split("://", 1)[0].lower()
        try:
            self.fs, self.path = fsspec.core.url_to_fs(self.url, **_fs_options(self.url, self.policy))
        except (ImportError, ValueError) as e:
            raise StorageError(f"{url}: {e} (pip install -e '.[remote]' brings s3fs and aiohttp)") from None
        self._local = threading.local()
        self._all: list[OrderedDict] = []
        self._lock = threading.Lock()
        self._count_retries()

    def _count_retries(self) -> None:
        if self.scheme not in ("s3", "s3a"):
            return
        self.fs.retries = min(S3FS_BODY_RETRIES, self.policy.attempts)  # an s3fs class attribute, not an option
        _count_s3fs_retries()
        try:
            self.fs.connect()  # its botocore client: each response says how often it was retried
            self.fs.s3.meta.events.unregister("after-call.s3", _count_botocore_retries)
            self.fs.s3.meta.events.register("after-call.s3", _count_botocore_retries)
        except Exception:  # noqa: BLE001  (no counting is no reason not to read)
            pass

    def __str__(self) -> str:
        return self.url

    def _key(self, name: str) -> str:
        return f"{self.path}/{name}"

    def exists(self, name: str) -> bool:
        """Through info(): fsspec's exists() answers False for any error (a timeout too), not only for 404."""
        try:
            self._retrying(f"looking up {name}", lambda: self.fs.info(self._key(name)))
            return True
        except FileNotFoundError:
            return False

    def size(self, name: str) -> int:
        return int(self._retrying(f"the size of {name}", lambda: self.fs.size(self._key(name))))

    def read_bytes(self, name: str) -> bytes:
        return self._retrying(f"reading {name}", lambda: self.fs.cat_file(self._key(name)))

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

    def _handle(self, name: str):
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
        return f

    def _drop_handle(self, name: str) -> None:
        f = self._handles().pop(name, None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001  (a broken connection)
                pass

    def _retrying(self, what: str, fn, on_error=None):
        """fn() under the retry policy: for http(s) retried here, for s3 by botocore and s3fs inside fn.
        StorageError naming the URL and the budget when the attempts run out (a missing object is no fault)."""
        attempts = self.policy.attempts if self.scheme in ("http", "https") else 1
        for attempt in range(attempts):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001  (aiohttp's, botocore's and fsspec's errors)
                # fsspec's HTTP info() reports any failure as FileNotFoundError, the failure as its cause
                cause = e.__cause__ if isinstance(e, FileNotFoundError) else e
                if cause is None or not _transient(cause):
                    raise
                if on_error is not None:
                    on_error()
                if attempt + 1 >= attempts:
                    raise StorageError(f"{self.url}: {what} failed after {self.policy.attempts} attempts "
                                       f"(data.remote_attempts) with {self.policy.timeout_s:g} s timeouts "
                                       f"(data.remote_timeout_s): {_reason(e)}") from None
                _count()
                time.sleep(self.policy.backoff(attempt))
        raise AssertionError("unreachable")

    def pread(self, name: str, offset: int, size: int) -> bytes:
        """`size` bytes at `offset`, retried as the module docstring says; StorageError past the budget."""

        def read() -> bytes:
            f = self._handle(name)
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise StorageError(f"{self.url}/{name}: asked for {size} bytes at {offset}, got {len(data)}")
            return data

        return self._retrying(f"reading {size} bytes of {name} at {offset}", read,
                              on_error=lambda: self._drop_handle(name))

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
        self._count_retries()  # a worker process counts its own retries


def open_store(root: str | Path, policy: RetryPolicy | None = None) -> LocalStore | RemoteStore:
    return RemoteStore(str(root), policy) if is_url(root) else LocalStore(root)


def _transient(e: BaseException) -> bool:
    """An error a retry may cure: the connection, a timeout, a throttled or failing server (429, 5xx)."""
    status = getattr(e, "status", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    return isinstance(e, (OSError, TimeoutError, ValueError, RuntimeError)) or type(e).__module__.startswith(
        ("aiohttp", "botocore", "aiobotocore", "fsspec", "asyncio"))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def store_sha256(store: LocalStore | RemoteStore, name: str) -> str:
    """Whole-file sha256 through the store (a positioned read of a local file, streamed from a URL)."""
    from salt.atomic import file_sha256

    if isinstance(store, LocalStore):
        return file_sha256(store.root / name)
    h = hashlib.sha256()
    size, offset, chunk = store.size(name), 0, 8 << 20
    while offset < size:  # each chunk a read that rides out faults as any other
        n = min(chunk, size - offset)
        h.update(store.pread(name, offset, n))
        offset += n
    return h.hexdigest()
