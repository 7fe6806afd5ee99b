"""`python -m dataprep.targets --verify cache/NAME`: is a target cache whole, and does it hold the teacher's targets?

Checks meta.json, then every file (size, sha256 over the whole file, footer, schema, job, row count, the
key and view id of every row), the shard set and the teacher against the fingerprints in meta.json, and
recomputes the first batch of a few files with the teacher to compare with the stored rows. Each damaged
file is named on a line of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from salt.atomic import file_sha256
from salt.data.config import LoaderConfig
from salt.data.loaders import open_loader
from salt.targets.fingerprint import shard_set_id, teacher_fingerprint
from salt.targets.format import (
    META,
    STORED_TORCH,
    TargetCacheError,
    arrow_schema,
    decode,
    encode,
    error_bound,
    hash_mismatch_message,
    open_arrow,
    read_file_index,
)
from salt.targets.job import TargetJob, job_device, load_frozen_teacher, teacher_targets
from salt.targets.meta import CacheMeta


@dataclass
class VerifyReport:
    root: Path
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        verdict = f"cache {self.root}: OK" if self.ok else f"cache {self.root}: {len(self.errors)} problem(s)"
        return "\n".join(self.lines + [f"error: {e}" for e in self.errors] + [verdict])


def verify_cache(root: Path, teacher: str | None = None, shards: str | None = None, files: int = 2,
                 progress: bool = False) -> VerifyReport:
    rep = VerifyReport(root)
    meta_path = root / META
    if not meta_path.exists():
        rep.errors.append(f"{meta_path} is missing: not a target cache")
        return rep
    try:
        meta = CacheMeta.load(root)
    except TargetCacheError as e:
        rep.errors.append(str(e))
        return rep
    k, dtype, tokens, width = meta.num_views, meta.dtype, meta.tokens, meta.width
    schema = arrow_schema(dtype, tokens, width)
    rep.lines.append(f"{len(meta.files)} files, {k} views, {tokens} tokens x {width} as {dtype} "
                     f"(zstd), teacher {meta.teacher_fingerprint[:12]}")
    if not meta.complete:
        missing = [f.file for f in meta.files if not (root / f.file).exists()]
        rep.errors.append(f"incomplete: {len(missing)} files missing ({', '.join(missing[:3])}...); rerun the "
                          "precompute command")
    index: dict[str, list[str]] = {}
    unhashed, hashed, damaged_rows = [], 0, 0
    for f in meta.files:
        path = root / f.file
        if not path.exists():
            continue
        try:
            reader = open_arrow(path, f.bytes)
            if f.sha256:  # the size matches: the whole file's hash next
                if file_sha256(path) != f.sha256:
                    rep.errors.append(hash_mismatch_message(path))  # one line per damaged file, nothing more
                    damaged_rows += f.rows
                    continue
                hashed += 1
            elif f.finished:  # finished, but recorded before hashes were
                unhashed.append(f.file)
            keys, bad = read_file_index(reader, path, meta.job_id, schema, k)
            _check_rows(path, keys, k)
        except TargetCacheError as e:
            rep.errors.append(str(e))
            continue
        index[f.shard] = keys
        if f.finished and (f.samples, sorted(f.bad_keys)) != (len(keys), sorted(bad)):
            rep.errors.append(f"{path.name}: {len(keys)} samples ({len(bad)} undecodable), meta.json says "
                              f"{f.samples} ({len(f.bad_keys)})")
    if hashed:
        rep.lines.append(f"{hashed} files match the sha256 recorded in {META}")
    if unhashed:
        rep.lines.append(f"note: {META} records no sha256 for {len(unhashed)} files ({', '.join(unhashed[:3])}...), "
                         "made before hashes were recorded: their contents were not checked; rerun the precompute "
                         "command to record them")
    counts = meta.counts
    if counts and meta.complete:
        rows = sum(len(v) for v in index.values()) * k + damaged_rows
        if rows != counts["rows"]:
            rep.errors.append(f"the files hold {rows} rows, meta.json counts {counts['rows']}")
        rep.lines.append(f"{counts['samples']} samples ({counts['bad_samples']} undecodable), {counts['rows']} rows, "
                         f"{counts['bytes'] / 1e6:.1f} MB ({counts['bytes_per_clip'] / 1e3:.1f} kB per clip, "
                         f"{counts['compression_ratio']:.2f}x zstd)")
    shard_root = Path(shards or meta.shards_path)
    shard_set = _check_shards(rep, shard_root, meta, index)
    teacher_path = teacher or meta.teacher_path
    if not Path(teacher_path).exists():
        rep.lines.append(f"teacher {teacher_path} not found: fingerprint and rows not rechecked (pass --teacher)")
        return rep
    fp = teacher_fingerprint(teacher_path)
    if fp != meta.teacher_fingerprint:
        rep.errors.append(f"teacher {teacher_path} (fingerprint {fp[:12]}) is not the one the cache was made with "
                          f"({meta.teacher_fingerprint[:12]})")
        return rep
    rep.lines.append(f"teacher {teacher_path}: fingerprint matches")
    if shard_set is not None and files > 0:
        _recompute(rep, root, meta, teacher_path, shard_root, shard_set, files, index)
    return rep


def _check_rows(path: Path, keys: list[str], k: int) -> None:
    """The key and view id of every row, reading only those two columns."""
    reader = ipc.open_file(pa.memory_map(str(path), "r"), options=ipc.IpcReadOptions(included_fields=[0, 1]))
    for r in range(reader.num_record_batches):
        b = reader.get_batch(r)
        if (b.column(0)[0].as_py(), b.column(1)[0].as_py()) != (keys[r // k], r % k):
            raise TargetCacheError(f"{path.name}: row {r} holds ({b.column(0)[0]}, {b.column(1)[0]}), expected "
                                   f"({keys[r // k]}, {r % k})")


def _check_shards(rep: VerifyReport, shard_root: Path, meta: CacheMeta, index: dict[str, list[str]]):
    from salt.data.shardset import ShardSet, ShardSetError

    try:
        shard_set = ShardSet(shard_root)
    except ShardSetError as e:
        rep.lines.append(f"shard set not checked: {e}")
        return None
    if shard_set_id(shard_set.manifest) != meta.shards_id:
        rep.errors.append(f"shard set {shard_root} is not the one the cache was made from ({meta.shards_path})")
        return None
    starts = np.searchsorted(shard_set.shard_ids, np.arange(len(shard_set.shard_names) + 1))
    for s, name in enumerate(shard_set.shard_names):
        if name in index and index[name] != shard_set.keys[starts[s]:starts[s + 1]]:
            rep.errors.append(f"{name}: the cache file's keys are not the shard's")
    rep.lines.append(f"shard set {shard_root}: matches ({len(shard_set)} samples)")
    return shard_set


def _recompute(rep: VerifyReport, root: Path, meta: CacheMeta, teacher_path: str, shard_root: Path, shard_set,
               files: int, index: dict[str, list[str]]) -> None:

    cfg_dict = dict(meta.loader_config)
    for key in ("scale", "ratio", "mean", "std"):
        cfg_dict[key] = tuple(cfg_dict[key])
    cfg = dataclasses.replace(LoaderConfig(**cfg_dict), shards=str(shard_root))
    job = TargetJob(teacher=teacher_path, out=str(root), num_views=meta.num_views, data=cfg,
                    patch_size=meta.geometry["model.patch_size"], tubelet_size=meta.geometry["model.tubelet_size"],
                    dtype=meta.dtype, teacher_dtype=meta.teacher_weights_dtype, autocast=meta.teacher_autocast,
                    layers=meta.layers, batch_size=cfg.batch_size, loader=meta.decode_loader)
    device = job_device()
    teacher = load_frozen_teacher(job, device)
    n = len(shard_set.shard_names)
    chosen = sorted({int(i) for i in np.linspace(0, n - 1, min(files, n)).round()})  # first, last, between
    dtype, k = job.dtype, job.num_views
    tol = 1e-4 if job.teacher_dtype == "fp32" and not job.autocast else 2.0 ** -5  # another device's rounding
    worst, exact, rows = 0.0, True, 0
    for s in chosen:
        path = root / meta.files[s].file
        if meta.files[s].shard not in index:
            continue  # missing or damaged: reported above
        with open_loader(job.loader_config(), job.loader, device=device, only_shards=[s]) as loader:
            batch = next(iter(loader))
        x = teacher_targets(teacher, batch.model_input(device), job.layers, job.autocast).cpu()  # (K * B, N, D)
        b = len(batch.keys) // k
        reader = open_arrow(path)
        for i in range(batch.valid):
            for v in range(k):
                row = reader.get_batch(i * k + v)
                if row.column(0)[0].as_py() != batch.keys[v * b + i] or row.column(2).null_count:
                    continue  # an undecodable sample (its slot went to another)
                stored = _row_tensor(row, dtype, *x.shape[1:])
                want = x[v * b + i]
                diff = (stored - want).abs()
                exact &= bool(torch.equal(stored, decode(*_encoded(want, dtype), dtype)))
                worst = max(worst, float((diff - error_bound(want, dtype)).max()) / (1 + float(want.abs().max())))
                rows += 1
    if worst > tol:
        rep.errors.append(f"recomputed {rows} rows: stored targets differ from the teacher's by up to {worst:.3g} "
                          f"beyond the {dtype} rounding (tolerance {tol:g})")
    else:
        rep.lines.append(f"recomputed {rows} rows of {len(chosen)} files: "
                         + ("bitwise equal to the stored values" if exact else
                            f"within {dtype} rounding + {worst:.2g} (tolerance {tol:g})"))


def _encoded(x: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    values, scale = encode(x.unsqueeze(0), dtype)
    return torch.from_numpy(values[0]), None if scale is None else torch.from_numpy(scale[0])


def _row_tensor(row: pa.RecordBatch, dtype: str, tokens: int, width: int) -> torch.Tensor:
    """One stored row, decoded: (N, D) float32."""
    values = torch.from_numpy(row.column(2).values.to_numpy(zero_copy_only=False).copy())
    values = values.view(STORED_TORCH[dtype]).reshape(tokens, width)
    scale = torch.from_numpy(row.column(3).values.to_numpy(zero_copy_only=False).copy()) if dtype == "fp8" else None
    return decode(values, scale, dtype)
