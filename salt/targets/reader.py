"""Reading a finished cache: the row index, verified reads in threads, and the training loop's prefetcher."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from salt.data.config import LoaderConfig
from salt.data.plan import BatchPlanner
from salt.data.storage import is_url, open_store, store_sha256
from salt.targets.fingerprint import geometry_section, recipe_section
from salt.targets.format import (
    META,
    STORED_TORCH,
    TargetCacheDamaged,
    TargetCacheError,
    TargetCacheMismatch,
    codec,
    decode,
    hash_mismatch_message,
    open_stored_arrow,
    read_file_index,
)
from salt.targets.meta import CacheMeta

_warned_unhashed: set[str] = set()  # caches already reported as having no hashes (once per process)


@dataclass
class EncodedTargets:
    """Rows as stored, on the CPU: decode on the device (a quarter to an eighth of float32's copy size)."""

    values: torch.Tensor  # (B, N, D) storage dtype (uint16 for bf16, uint8 for fp8)
    scale: torch.Tensor | None  # (B, N) float32 for fp8
    dtype: str

    def decode(self, device: torch.device | str = "cpu") -> torch.Tensor:
        v = self.values.to(device, non_blocking=True)
        s = None if self.scale is None else self.scale.to(device, non_blocking=True)
        return decode(v, s, self.dtype)  # (B, N, D) float32

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + (0 if self.scale is None else self.scale.numel() * 4)


class TargetCache:
    """A finished cache: meta.json, an index (key -> file, position) built from the files' footers, and
    row reads from memory-mapped files in `threads` threads."""

    def __init__(self, root: str | Path, threads: int = 4, pin_memory: bool = False, verify: bool = True):
        """root: a folder or a URL (s3://BUCKET/PREFIX: rows are read by range requests).
        pin_memory: read into page-locked buffers (a faster, asynchronous copy to a GPU).
        verify: hash each file on its first read in this process and refuse one that does not match
        meta.json's sha256 (TargetCacheDamaged, naming the file). Off, only the sizes are checked."""
        self.root = str(root).rstrip("/") if is_url(root) else Path(root)
        self.store = open_store(root)
        self.pin_memory = pin_memory
        self.verify = verify
        if not self.store.exists(META):
            raise TargetCacheError(f"no target cache at {self.root}: {META} is missing (make one with "
                                   "`python -m dataprep.targets --teacher ... --shards ... --out DIR`)")
        self.meta = CacheMeta.load(self.root, self.store.read_bytes(META).decode())
        if not self.meta.complete:
            done = sum(self.store.exists(f.file) for f in self.meta.files)
            raise TargetCacheError(f"target cache {self.root} is incomplete ({done} of {len(self.meta.files)} "
                                   "files): rerun its `python -m dataprep.targets` command to finish it")
        self.dtype, self.tokens, self.width = self.meta.dtype, self.meta.tokens, self.meta.width
        self.num_views = self.meta.num_views
        self.schema = self.meta.schema()
        self.index: dict[str, tuple[int, int]] = {}  # key -> (file number, position)
        self.bad_keys: set[str] = set()
        for n in range(len(self.meta.files)):
            keys, bad = self._read_footer(n)
            self.bad_keys.update(bad)
            self.index.update((k, (n, j)) for j, k in enumerate(keys))
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="targets")
        self._verified: set[int] = set()  # files hashed and found intact in this process
        self._damaged: dict[int, str] = {}
        self._file_locks = [threading.Lock() for _ in self.meta.files]
        unhashed = [f.file for f in self.meta.files if f.sha256 is None]
        if verify and unhashed and str(self.root.resolve()) not in _warned_unhashed:
            _warned_unhashed.add(str(self.root.resolve()))
            print(f"warning: target cache {self.root}: {META} records no sha256 for {len(unhashed)} of its "
                  f"{len(self.meta.files)} files (made before hashes were recorded): their contents are not "
                  "checked; rerun its `python -m dataprep.targets` command to record them", file=sys.stderr,
                  flush=True)

    @property
    def teacher_fingerprint(self) -> str:
        return self.meta.teacher_fingerprint

    def path(self, n: int) -> Path | str:
        return f"{self.root}/{self.meta.files[n].file}" if isinstance(self.root, str) else \
            self.root / self.meta.files[n].file

    def _open(self, n: int) -> ipc.RecordBatchFileReader:
        """This thread's reader of file n (readers are not shared between threads)."""
        readers = self._local.__dict__.setdefault("readers", {})
        r = readers.get(n)
        if r is None:
            r = readers[n] = open_stored_arrow(self.store, self.meta.files[n].file, self.meta.files[n].bytes)
        return r

    def check_file(self, n: int) -> None:
        """Hash file n once (per process) and raise TargetCacheDamaged if it is not the one meta.json
        records; later calls cost a set lookup. Threads asking for the same file wait for one hash."""
        if n in self._verified:
            return
        with self._file_locks[n]:
            if n in self._verified:
                return
            if n in self._damaged:
                raise TargetCacheDamaged(self._damaged[n])
            want = self.meta.files[n].sha256
            if want is not None:
                path = self.path(n)
                try:
                    got = store_sha256(self.store, self.meta.files[n].file)
                except OSError as e:
                    raise TargetCacheError(f"cache file {path} cannot be read: {e}") from None
                if got != want:
                    self._damaged[n] = hash_mismatch_message(path)
                    raise TargetCacheDamaged(self._damaged[n])
            self._verified.add(n)

    def _read_footer(self, n: int) -> tuple[list[str], list[str]]:
        path = self.path(n)
        return read_file_index(open_stored_arrow(self.store, self.meta.files[n].file, self.meta.files[n].bytes),
                               path, self.meta.job_id, self.schema, self.num_views)

    def locate(self, key: str, view_id: int) -> tuple[int, int]:
        """(file number, row) of (key, view id), or an error naming the key."""
        where = self.index.get(key)
        if where is None or key in self.bad_keys:
            why = "the precompute job could not decode it" if key in self.bad_keys else \
                f"it is not in the shard set the cache was made from ({self.meta.shards_path})"
            raise TargetCacheError(f"target cache {self.root} has no row for sample {key!r}: {why}")
        if not 0 <= view_id < self.num_views:
            raise TargetCacheError(f"target cache {self.root} has views 0..{self.num_views - 1}, not view {view_id} "
                                   f"(sample {key!r})")
        n, j = where
        return n, j * self.num_views + view_id

    def _read_row(self, key: str, view_id: int, values: np.ndarray, scale: np.ndarray | None) -> None:
        n, row = self.locate(key, view_id)
        if self.verify and n not in self._verified:
            self.check_file(n)
        try:
            batch = self._open(n).get_batch(row)
        except (pa.ArrowException, OSError) as e:
            raise TargetCacheError(f"{self.path(n)}: row {row} unreadable ({e}): damaged; rerun the precompute "
                                   "job to rewrite it") from None
        if batch.column(0)[0].as_py() != key or batch.column(1)[0].as_py() != view_id:
            raise TargetCacheError(f"{self.path(n)}: row {row} holds ({batch.column(0)[0]}, {batch.column(1)[0]}), "
                                   f"expected ({key}, {view_id}): the file does not match its footer")
        if batch.column(2).null_count:
            raise TargetCacheError(f"target cache {self.root} has no row for sample {key!r}: the precompute job "
                                   "could not decode it")
        np.copyto(values, batch.column(2).values.to_numpy(zero_copy_only=False).reshape(values.shape))
        if scale is not None:
            np.copyto(scale, batch.column(3).values.to_numpy(zero_copy_only=False))

    def read(self, keys: list[str], view_ids: list[int] | torch.Tensor) -> EncodedTargets:
        """Rows for (keys[i], view_ids[i]) as stored: values (B, N, D), scales (B, N) for fp8."""
        ids = [int(v) for v in view_ids]
        c = codec(self.dtype)
        values = torch.empty((len(keys), self.tokens, self.width), dtype=STORED_TORCH[c.name],
                             pin_memory=self.pin_memory)
        scale = torch.empty((len(keys), self.tokens), dtype=torch.float32, pin_memory=self.pin_memory) \
            if c.scaled else None
        vnp, snp = values.numpy(), None if scale is None else scale.numpy()
        futures = [self._pool.submit(self._read_row, k, v, vnp[i], None if snp is None else snp[i])
                   for i, (k, v) in enumerate(zip(keys, ids, strict=True))]
        for f in futures:
            f.result()
        return EncodedTargets(values, scale, self.dtype)

    def check_run(self, data: LoaderConfig, patch_size: int, tubelet_size: int,
                  teacher_fingerprint: str | None = None) -> None:
        """Refuse a cache made for another teacher, geometry or view recipe, naming what differs."""
        if data.views_per_clip != 1:
            raise TargetCacheMismatch(f"data.views_per_clip is {data.views_per_clip}; with a target cache it must be 1 "
                                      "(each cached view is a decode of its own)")
        problems = []
        if teacher_fingerprint is not None and teacher_fingerprint != self.teacher_fingerprint:
            problems.append(f"another teacher (fingerprint {self.teacher_fingerprint[:12]} in the cache, "
                            f"{teacher_fingerprint[:12]} for teacher.path)")
        for what, mine, run in (("geometry", self.meta.geometry, geometry_section(data, patch_size, tubelet_size)),
                                ("view recipe", self.meta.recipe, recipe_section(data))):
            for k in run:
                if _norm(mine.get(k)) != _norm(run[k]):
                    problems.append(f"another {what}: {k} is {mine.get(k)} in the cache, {run[k]} in this run")
        if data.cached_views not in (0, self.num_views):
            problems.append(f"another view count: data.cached_views is {data.cached_views}, the cache has "
                            f"{self.num_views} views per sample")
        if problems:
            raise TargetCacheMismatch(f"target cache {self.root} does not fit this run; it was made for "
                                      + "; ".join(problems) + ". Set these keys to the cache's values, or precompute "
                                      "a cache for this run with `python -m dataprep.targets`")

    def decode_note(self, loader: str, device: str) -> str | None:
        """A warning when this run decodes its views elsewhere than the job did (pixels differ in the last bits)."""
        made = self.meta
        if (made.decode_loader, made.decode_device) == (loader, device):
            return None
        return (f"note: the cache's views were decoded by {made.decode_loader} on the {made.decode_device}, this run decodes "
                f"with {loader} on the {device}: its pixels differ slightly from those the targets were computed on")

    def check_covers(self, keys: list[str], shard_set: str = "") -> None:
        """Every sample of the run's shard set has rows (or was skipped as undecodable by the job)."""
        missing = [k for k in keys if k not in self.index and k not in self.bad_keys]
        if missing:
            raise TargetCacheMismatch(
                f"target cache {self.root} has no rows for {len(missing)} of the {len(keys)} samples of "
                f"{shard_set or 'the shard set'} (e.g. {', '.join(missing[:3])}); it was made from "
                f"{self.meta.shards_path}")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._local = threading.local()
        self.store.close()


def _norm(v: Any) -> Any:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else v



class TargetPrefetcher:
    """Reads the targets of the next batches in the background. The keys of upcoming batches come from
    a private copy of the loader's planner (plans are pure functions of (epoch, batch)), so the loader
    itself is never read ahead and its resume position stays exact."""

    def __init__(self, cache: TargetCache, planner: BatchPlanner, depth: int = 2):
        self.cache, self.depth = cache, depth
        self.planner = BatchPlanner(planner.shards, planner.cfg, planner.rank, planner.world)
        self.source = planner  # the loader's: its set of bad samples grows while training
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="target-prefetch")
        self._pending: dict[tuple[int, int], tuple[list[str], list[int], Future]] = {}

    def _ids(self, epoch: int, index: int) -> tuple[list[str], list[int]]:
        self.planner.bad = set(self.source.bad)
        plan = self.planner.plan(epoch, index)
        v = len(plan.samples[0].views)
        return ([s.key for j in range(v) for s in plan.samples],
                [s.views[j][0] for j in range(v) for s in plan.samples])

    def get(self, keys: list[str], view_ids: torch.Tensor, epoch: int, index: int) -> EncodedTargets:
        ids = [int(v) for v in view_ids]
        pending = self._pending.pop((epoch, index), None)
        e, i = epoch, index
        for _ in range(self.depth):
            i += 1
            if i >= self.planner.batches_per_epoch:
                e, i = e + 1, 0
            if (e, i) not in self._pending:
                k, v = self._ids(e, i)
                self._pending[(e, i)] = (k, v, self._pool.submit(self.cache.read, k, v))
        if pending is not None and pending[0] == keys and pending[1] == ids:
            return pending[2].result()
        return self.cache.read(keys, ids)  # a sample found undecodable since changed the batch

    def close(self) -> None:
        for *_, f in self._pending.values():
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


