"""The teacher-target cache on disk: the Arrow file format, the storage codecs and the errors a reader raises.

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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from salt.data.plan import LoaderError

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


def open_stored_arrow(store, name: str, expected_bytes: int | None = None) -> ipc.RecordBatchFileReader:
    """An Arrow IPC file of a cache in a local folder (memory-mapped) or at a URL (salt.data.storage's
    RemoteStore: read by ranges through fsspec, the footer and each row batch a range request)."""
    from salt.data.storage import LocalStore

    if isinstance(store, LocalStore):
        return open_arrow(store.root / name, expected_bytes)
    where = f"{store}/{name}"
    try:
        size = store.size(name)
    except FileNotFoundError:
        raise TargetCacheError(f"{where} is missing from the target cache: rerun the precompute job to write it") \
            from None
    if expected_bytes is not None and size != expected_bytes:
        raise TargetCacheError(f"{where} has {size} bytes, meta.json says {expected_bytes}: truncated or replaced; "
                               "rerun the precompute job (it rewrites damaged files)")
    try:
        return ipc.open_file(store.open(name), options=ipc.IpcReadOptions(use_threads=False))
    except (pa.ArrowException, OSError) as e:
        raise TargetCacheError(f"{where} ({size} bytes) is truncated or not an Arrow IPC file ({e}); rerun the "
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


def cache_bytes(root: str | Path) -> int:
    return sum(os.path.getsize(p) for p in Path(root).glob("*.arrow"))
