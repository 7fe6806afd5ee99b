"""The teacher-target cache: its on-disk format, the storage codecs, and the reader the student stage uses.

A cache folder (written by `python -m dataprep.targets`) holds one Arrow IPC file per input shard
(`<shard>.arrow`, buffers compressed with zstd) and `meta.json`. A row is one (sample key, view id):

    key: string   view_id: int32   targets: fixed_size_list<STORE>[tokens * width]
    scale: fixed_size_list<float32>[tokens]        (fp8 only: per-token scale)

Each row is its own record batch, so a training read decompresses only the rows it uses. The file's
footer metadata (`salt`) lists the shard's keys in stored order, so row = position * num_views + view id;
a sample the job could not decode keeps its rows with null targets, and the last row's custom metadata
(`salt_summary`) lists those samples. Opening a cache reads the footers and last rows only. The targets are what the online student
step computes (salt.objectives.latent.compute_teacher_targets: the teacher's token features, layer-normed
over the feature dim without affine), rounded to the storage dtype:

    fp32  exact          bf16  bits as uint16, |error| <= 2^-8 |x|      fp16  |error| <= 2^-11 |x|
    fp8   e4m3 bits as uint8 with a float32 scale per token (absmax / 448): |error| <= 2^-4 |x| + 2^-10 scale

Integrity: meta.json records each file's size and sha256 (`files[i].bytes`, `files[i].sha256`), written
when the file is finished and before it is renamed into place. Opening a cache checks the sizes; the
first row read from a file in a process hashes the whole file and refuses it if it differs (`verify=True`,
the default), so damage that keeps the size never reaches a training step. Caches made before hashes were
recorded (same format, no `sha256` keys) still open, with one warning; rerunning their precompute command
records the hashes. `python -m dataprep.targets --verify DIR` hashes every file.
"""

from __future__ import annotations

import hashlib
import json
import os
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

from salt.atomic import file_sha256
from salt.data.config import LoaderConfig
from salt.data.plan import BatchPlanner, LoaderError

FORMAT = "salt-targets/1"
META = "meta.json"
STORAGE_DTYPES = ("fp32", "bf16", "fp16", "fp8")
FP8_MAX = 448.0  # largest float8_e4m3fn
TARGETS_DEFINITION = ("F.layer_norm(teacher(clip), (width,)) per token, no affine (V-JEPA): exactly the student "
                      "stage's online targets (salt.objectives.latent.compute_teacher_targets), then stored as `dtype`")


class TargetCacheError(LoaderError):
    """A cache that cannot be used as it is (missing, incomplete, damaged, or without a row asked for)."""


class TargetCacheMismatch(TargetCacheError):
    """The cache was made for another teacher, clip geometry or view recipe than the run."""


class TargetCacheDamaged(TargetCacheError):
    """A cache file whose bytes are not the ones meta.json records (damaged or replaced)."""


REBUILD_HINT = ("delete it and rerun the cache's `python -m dataprep.targets --teacher ... --shards ... --out DIR` "
                "command, which writes only the missing files")


def hash_mismatch_message(path: Path) -> str:
    return (f"cache file {path} does not match the sha256 recorded in {META}: damaged or replaced; rebuild it: "
            f"{REBUILD_HINT}")


_warned_unhashed: set[str] = set()  # caches already reported as having no hashes (once per process)


# ---------------------------------------------------------------- storage codecs


@dataclass(frozen=True)
class StorageCodec:
    name: str
    arrow_type: pa.DataType  # element type of the targets column
    torch_dtype: torch.dtype  # how the stored values are read back (bits reinterpreted for bf16/fp8)
    numpy_dtype: np.dtype
    scaled: bool  # a per-token float32 scale column

    def bytes_per_token(self, width: int) -> int:
        return width * self.numpy_dtype.itemsize + (4 if self.scaled else 0)


STORED_TORCH = {"fp32": torch.float32, "bf16": torch.uint16, "fp16": torch.float16, "fp8": torch.uint8}
CODECS = {
    "fp32": StorageCodec("fp32", pa.float32(), torch.float32, np.dtype(np.float32), False),
    "bf16": StorageCodec("bf16", pa.uint16(), torch.bfloat16, np.dtype(np.uint16), False),
    "fp16": StorageCodec("fp16", pa.float16(), torch.float16, np.dtype(np.float16), False),
    "fp8": StorageCodec("fp8", pa.uint8(), torch.float8_e4m3fn, np.dtype(np.uint8), True),
}


def codec(name: str) -> StorageCodec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"storage dtype must be one of {STORAGE_DTYPES}, got {name!r}") from None


def encode(targets: torch.Tensor, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """targets (R, N, D) float32 on any device -> stored values (R, N, D) in the codec's numpy dtype and,
    for fp8, the per-token scales (R, N) float32."""
    c = codec(dtype)
    x = targets.float()
    scale = None
    if c.scaled:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30) / FP8_MAX  # (R, N, 1)
        x = (x / scale).clamp(-FP8_MAX, FP8_MAX)
    stored = x.to(c.torch_dtype)
    if c.name in ("bf16", "fp8"):
        stored = stored.view(torch.uint16 if c.name == "bf16" else torch.uint8)
    values = stored.cpu().numpy()
    return values, None if scale is None else scale.squeeze(-1).cpu().numpy()


def decode(values: torch.Tensor, scale: torch.Tensor | None, dtype: str) -> torch.Tensor:
    """Stored values (B, N, D) (uint16 for bf16, uint8 for fp8) and scales (B, N) -> (B, N, D) float32."""
    c = codec(dtype)
    if c.name in ("bf16", "fp8"):
        values = values.view(c.torch_dtype)
    out = values.float()
    if c.scaled:
        out = out * scale.unsqueeze(-1)
    return out


def error_bound(targets: torch.Tensor, dtype: str) -> torch.Tensor:
    """Per-element bound on |decode(encode(x)) - x| (round to nearest; the float32 scaling adds ~2^-22 |x|)."""
    x = targets.float().abs()
    if dtype == "fp32":
        return torch.zeros_like(x)
    if dtype == "bf16":
        return x * 2.0 ** -8 + 1e-38
    if dtype == "fp16":
        return x * 2.0 ** -11 + 2.0 ** -25
    scale = x.amax(dim=-1, keepdim=True).clamp_min(1e-30) / FP8_MAX
    return x * (2.0 ** -4 + 2.0 ** -20) + scale * 2.0 ** -10


def arrow_schema(dtype: str, tokens: int, width: int) -> pa.Schema:
    c = codec(dtype)
    fields = [pa.field("key", pa.string(), nullable=False), pa.field("view_id", pa.int32(), nullable=False),
              pa.field("targets", pa.list_(c.arrow_type, tokens * width))]  # null: sample undecodable
    if c.scaled:
        fields.append(pa.field("scale", pa.list_(pa.float32(), tokens)))
    meta = {"format": FORMAT, "dtype": dtype, "tokens": str(tokens), "width": str(width)}
    return pa.schema(fields, metadata=meta)


def file_name(shard_name: str) -> str:
    """synth-000003.tar -> synth-000003.arrow"""
    return Path(shard_name).with_suffix(".arrow").name


# ---------------------------------------------------------------- what a cache was made for


def teacher_fingerprint(path: str | Path) -> str:
    """sha256 of the exported teacher's weights hash and architecture (not its step or run name)."""
    from salt.models.io import encoder_fingerprint, find_encoder

    info = json.loads(find_encoder(path).with_suffix(".json").read_text())
    arch = {k: info.get(k) for k in ("size", "depth", "img_size", "num_frames", "patch_size", "tubelet_size",
                                     "use_rope", "embed_dim")}
    return sha256_json({"weights_sha256": encoder_fingerprint(path), "architecture": arch})


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def geometry_section(data: LoaderConfig, patch_size: int, tubelet_size: int) -> dict:
    """The clip geometry (config keys -> values): a cache is valid only for this."""
    return {"data.num_frames": data.num_frames, "data.frame_stride": data.frame_stride,
            "data.crop_size": data.crop_size, "model.patch_size": patch_size, "model.tubelet_size": tubelet_size}


def recipe_section(data: LoaderConfig) -> dict:
    """The view recipe besides the geometry (config keys -> values): crops, flip, seed, normalisation."""
    return {"data.scale": list(data.scale), "data.ratio": list(data.ratio), "data.flip": data.flip,
            "data.seed": data.seed, "data.mean": list(data.mean), "data.std": list(data.std)}


def shard_set_id(manifest: dict) -> dict:
    """Names a shard set by content: its name, sample count and the (file, bytes) of its shards."""
    return {"name": manifest.get("name"), "num_samples": manifest.get("num_samples"),
            "shards_sha256": sha256_json([[s["path"], s["bytes"]] for s in manifest["shards"]])}


# ---------------------------------------------------------------- reading


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
        """pin_memory: read into page-locked buffers (a faster, asynchronous copy to a GPU).
        verify: hash each file on its first read in this process and refuse one that does not match
        meta.json's sha256 (TargetCacheDamaged, naming the file). Off, only the sizes are checked."""
        self.root = Path(root)
        self.pin_memory = pin_memory
        self.verify = verify
        meta_path = self.root / META
        if not meta_path.exists():
            raise TargetCacheError(f"no target cache at {self.root}: {META} is missing (make one with "
                                   "`python -m dataprep.targets --teacher ... --shards ... --out DIR`)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise TargetCacheError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        if not self.meta.get("complete"):
            done = sum((self.root / f["file"]).exists() for f in self.meta["files"])
            raise TargetCacheError(f"target cache {self.root} is incomplete ({done} of {len(self.meta['files'])} "
                                   "files): rerun its `python -m dataprep.targets` command to finish it")
        t = self.meta["targets"]
        self.dtype, self.tokens, self.width = self.meta["storage"]["dtype"], int(t["tokens"]), int(t["width"])
        self.num_views = int(self.meta["views"]["num_views"])
        self.schema = arrow_schema(self.dtype, self.tokens, self.width)
        self.index: dict[str, tuple[int, int]] = {}  # key -> (file number, position)
        self.bad_keys: set[str] = set()
        for n in range(len(self.meta["files"])):
            keys, bad = self._read_footer(n)
            self.bad_keys.update(bad)
            self.index.update((k, (n, j)) for j, k in enumerate(keys))
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="targets")
        self._verified: set[int] = set()  # files hashed and found intact in this process
        self._damaged: dict[int, str] = {}
        self._file_locks = [threading.Lock() for _ in self.meta["files"]]
        unhashed = [f["file"] for f in self.meta["files"] if "sha256" not in f]
        if verify and unhashed and str(self.root.resolve()) not in _warned_unhashed:
            _warned_unhashed.add(str(self.root.resolve()))
            print(f"warning: target cache {self.root}: {META} records no sha256 for {len(unhashed)} of its "
                  f"{len(self.meta['files'])} files (made before hashes were recorded): their contents are not "
                  "checked; rerun its `python -m dataprep.targets` command to record them", file=sys.stderr,
                  flush=True)

    @property
    def teacher_fingerprint(self) -> str:
        return self.meta["teacher"]["fingerprint"]

    def path(self, n: int) -> Path:
        return self.root / self.meta["files"][n]["file"]

    def _open(self, n: int) -> ipc.RecordBatchFileReader:
        """This thread's reader of file n (readers are not shared between threads)."""
        readers = self._local.__dict__.setdefault("readers", {})
        r = readers.get(n)
        if r is None:
            r = readers[n] = open_arrow(self.path(n), self.meta["files"][n].get("bytes"))
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
            want = self.meta["files"][n].get("sha256")
            if want is not None:
                path = self.path(n)
                try:
                    got = file_sha256(path)
                except OSError as e:
                    raise TargetCacheError(f"cache file {path} cannot be read: {e}") from None
                if got != want:
                    self._damaged[n] = hash_mismatch_message(path)
                    raise TargetCacheDamaged(self._damaged[n])
            self._verified.add(n)

    def _read_footer(self, n: int) -> tuple[list[str], list[str]]:
        path = self.path(n)
        return read_file_index(open_arrow(path, self.meta["files"][n].get("bytes")), path, self.meta["job_id"],
                               self.schema, self.num_views)

    def locate(self, key: str, view_id: int) -> tuple[int, int]:
        """(file number, row) of (key, view id), or an error naming the key."""
        where = self.index.get(key)
        if where is None or key in self.bad_keys:
            why = "the precompute job could not decode it" if key in self.bad_keys else \
                f"it is not in the shard set the cache was made from ({self.meta['shards']['path']})"
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
        for what, mine, run in (("geometry", self.meta["geometry"], geometry_section(data, patch_size, tubelet_size)),
                                ("view recipe", self.meta["views"]["recipe"], recipe_section(data))):
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
        made = self.meta["decode"]
        if (made["loader"], made["device"]) == (loader, device):
            return None
        return (f"note: the cache's views were decoded by {made['loader']} on the {made['device']}, this run decodes "
                f"with {loader} on the {device}: its pixels differ slightly from those the targets were computed on")

    def check_covers(self, keys: list[str], shard_set: str = "") -> None:
        """Every sample of the run's shard set has rows (or was skipped as undecodable by the job)."""
        missing = [k for k in keys if k not in self.index and k not in self.bad_keys]
        if missing:
            raise TargetCacheMismatch(
                f"target cache {self.root} has no rows for {len(missing)} of the {len(keys)} samples of "
                f"{shard_set or 'the shard set'} (e.g. {', '.join(missing[:3])}); it was made from "
                f"{self.meta['shards']['path']}")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._local = threading.local()


def _norm(v: Any) -> Any:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else v


def open_arrow(path: Path, expected_bytes: int | None = None) -> ipc.RecordBatchFileReader:
    """Memory-maps an Arrow IPC file, with a clear message when it is missing, truncated or not Arrow."""
    if not path.exists():
        raise TargetCacheError(f"{path} is missing from the target cache: rerun the precompute job to write it")
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise TargetCacheError(f"{path} has {size} bytes, meta.json says {expected_bytes}: truncated or replaced; "
                               "rerun the precompute job (it rewrites damaged files)")
    try:
        return ipc.open_file(pa.memory_map(str(path), "r"), options=ipc.IpcReadOptions(use_threads=False))
    except (pa.ArrowException, OSError) as e:
        raise TargetCacheError(f"{path} ({size} bytes) is truncated or not an Arrow IPC file ({e}); rerun the "
                               "precompute job (it rewrites damaged files)") from None


def footer_metadata(reader: ipc.RecordBatchFileReader, path: Path) -> dict:
    raw = reader.metadata or {}
    try:
        return json.loads(raw[b"salt"])
    except (KeyError, ValueError):
        raise TargetCacheError(f"{path} has no salt footer: not a file of a target cache") from None


def read_file_index(reader: ipc.RecordBatchFileReader, path: Path, job_id: str, schema: pa.Schema,
                    num_views: int) -> tuple[list[str], list[str]]:
    """(keys in row order, keys the job could not decode) of one cache file, after checking that it
    belongs to the job, has the schema and holds a row for every (key, view)."""
    footer = footer_metadata(reader, path)
    if footer.get("job") != job_id:
        raise TargetCacheError(f"{path} was written by another precompute job (teacher, views or dtype) than "
                               f"{path.parent / META}: rerun the job with --overwrite")
    if not reader.schema.equals(schema, check_metadata=False):
        raise TargetCacheError(f"{path}: schema {reader.schema} does not match {META}: {schema}")
    keys = footer["keys"]
    if reader.num_record_batches != len(keys) * num_views:
        raise TargetCacheError(f"{path} holds {reader.num_record_batches} rows, its footer lists {len(keys)} "
                               f"samples x {num_views} views: damaged; rerun the precompute job")
    if not keys:
        return keys, []
    try:
        last = reader.get_batch_with_custom_metadata(reader.num_record_batches - 1)
        summary = json.loads((last.custom_metadata or {})[b"salt_summary"])
    except (pa.ArrowException, OSError, KeyError, ValueError) as e:
        raise TargetCacheError(f"{path}: last row unreadable or without its summary ({e}): damaged; rerun the "
                               "precompute job") from None
    return keys, summary["bad_keys"]


# ---------------------------------------------------------------- prefetch for the training loop


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


def cache_bytes(root: str | Path) -> int:
    return sum(os.path.getsize(p) for p in Path(root).glob("*.arrow"))
