"""One cache file: the rows of one shard, written under a temporary name and renamed when complete.

A failed write (a full disk above all) raises WriteError naming the file; `abort()` then removes the
temporary file, so nothing that looks finished is ever half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from salt.atomic import file_sha256, reporting_write_errors
from salt.targets.format import codec, file_name


class ShardTargetWriter:
    """Rows of one shard, samples in stored order, views 0..K-1 each, one record batch per row.

    The footer (fixed when the file is opened) lists the shard's keys; a sample that could not be
    decoded gets null rows, and the last row carries the list of such samples (`salt_summary`)."""

    def __init__(self, out: Path, shard_name: str, keys: list[str], schema: pa.Schema, job_id: str,
                 num_views: int, dtype: str, compression_level: int | None = None):
        self.path = out / file_name(shard_name)
        self.tmp = out / f".{self.path.name}.partial"
        self.keys, self.schema, self.num_views, self.dtype = keys, schema, num_views, dtype
        self.bad: list[str] = []
        self.next = 0  # position of the next sample
        self._pending: pa.RecordBatch | None = None  # the latest row: written last, with the summary
        footer = {"job": job_id, "shard": shard_name, "num_views": num_views, "keys": keys}
        options = ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level))
        self._sink = self._writer = None
        try:
            with reporting_write_errors(self.path):
                self._sink = pa.OSFile(str(self.tmp), "wb")
                self._writer = ipc.new_file(self._sink, schema, options=options,
                                            metadata={"salt": json.dumps(footer)})
        except BaseException:
            self.abort()
            raise

    def _row(self, key: str, view_id: int, values: np.ndarray | None, scale: np.ndarray | None) -> pa.RecordBatch:
        fields = self.schema
        if values is None:
            cols = [pa.nulls(1, f.type) for f in list(fields)[2:]]
        else:
            c = codec(self.dtype)
            cols = [pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(c.numpy_dtype, copy=False)),
                                                      values.size)]
            if c.scaled:
                cols.append(pa.FixedSizeListArray.from_arrays(pa.array(scale.reshape(-1)), scale.size))
        return pa.record_batch([pa.array([key]), pa.array([view_id], pa.int32()), *cols], schema=fields)

    def _put(self, batch: pa.RecordBatch) -> None:
        if self._pending is not None:
            with reporting_write_errors(self.path):
                self._writer.write_batch(self._pending)
        self._pending = batch

    def add(self, key: str, values: np.ndarray | None, scale: np.ndarray | None = None) -> None:
        """values (K, N, D) stored dtype, scale (K, N) for fp8; values None: the sample could not be decoded."""
        if self.next >= len(self.keys) or key != self.keys[self.next]:
            want = self.keys[self.next] if self.next < len(self.keys) else "nothing (shard complete)"
            raise RuntimeError(f"{self.path.name}: got sample {key}, expected {want}")
        if values is None:
            self.bad.append(key)
        for v in range(self.num_views):
            self._put(self._row(key, v, None if values is None else values[v],
                                None if scale is None or values is None else scale[v]))
        self.next += 1

    def finish(self, record: Callable[[dict], None] | None = None,
               published: Callable[[dict], None] | None = None) -> dict:
        """Writes the last row and the footer, fsyncs, hashes, calls `record(summary)` (the job writes the
        summary, sha256 included, into meta.json) and only then renames the file into place, so a file
        under its final name always has its hash recorded; then `published(summary)` (an object-store
        output uploads it). Returns the file's summary."""
        if self.next != len(self.keys):
            raise RuntimeError(f"{self.path.name}: finished after {self.next} of {len(self.keys)} samples")
        with reporting_write_errors(self.path):
            if self._pending is not None:
                self._writer.write_batch(self._pending, custom_metadata={
                    "salt_summary": json.dumps({"bad_keys": self.bad, "samples": len(self.keys)})})
            self._writer.close()
            self._sink.close()
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            summary = {"file": self.path.name, "samples": len(self.keys), "rows": len(self.keys) * self.num_views,
                       "bad_keys": self.bad, "bytes": self.tmp.stat().st_size, "sha256": file_sha256(self.tmp)}
        if record is not None:
            record(summary)
        with reporting_write_errors(self.path):
            os.replace(self.tmp, self.path)
        if published is not None:
            published(summary)
        return summary

    def abort(self) -> None:
        """Drops the unfinished file (after any failure; never raises)."""
        for close in (getattr(self._writer, "close", None), getattr(self._sink, "close", None)):
            try:
                if close is not None:
                    close()
            except (pa.ArrowException, OSError, ValueError):
                pass
        self.tmp.unlink(missing_ok=True)
