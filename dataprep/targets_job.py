"""The precompute job: every (sample, view) of a shard set through the frozen teacher, into a target cache.

Views come from the training loader itself in its precompute mode (salt.data: stored order, every view
id 0..K-1 of every sample, one decode per view, batches aligned to shards), so the pixels are the ones
the student loader produces for (key, view id). The teacher runs as in the student stage: weights in
`teacher.dtype`, under the DeepSpeed config's autocast, `compute_teacher_targets`. Shard s goes to rank
s % world; each finished file is renamed into place, so a rerun only does the files that are missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from salt.atomic import write_json_atomic
from salt.data.config import LoaderConfig
from salt.data.shardset import ShardSet
from salt.data.target_cache import (
    FORMAT,
    META,
    TARGETS_DEFINITION,
    TargetCacheError,
    arrow_schema,
    codec,
    encode,
    file_name,
    geometry_section,
    open_arrow,
    read_file_index,
    recipe_section,
    sha256_json,
    shard_set_id,
    teacher_fingerprint,
)
from salt.models import VideoViT
from salt.objectives.common import freeze
from salt.objectives.latent import compute_teacher_targets

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TargetJobError(Exception):
    """A job-level problem with a message for the user."""


@dataclass(frozen=True)
class TargetJob:
    teacher: str  # exported encoder (run folder, export folder or .safetensors)
    out: str
    num_views: int
    data: LoaderConfig  # the student run's data section: shards, geometry, view recipe, normalisation
    patch_size: int
    tubelet_size: int
    dtype: str = "bf16"  # storage: fp32 | bf16 | fp16 | fp8
    teacher_dtype: str = "bf16"  # the teacher's weights, as the student stage's teacher.dtype
    autocast: str | None = "bf16"  # the student run's DeepSpeed torch_autocast dtype (bf16 | fp16), or None
    layers: tuple[int, ...] | None = None  # None: the final output (the student's targets)
    batch_size: int = 4  # samples per loader batch; the teacher sees batch_size * num_views clips
    loader: str = "dali"  # dali | reference
    compression_level: int | None = None  # zstd level; None: Arrow's default

    def validate(self) -> None:
        codec(self.dtype)
        if self.num_views < 1 or self.batch_size < 1:
            raise TargetJobError("--views and --batch-size must be >= 1")
        if self.data.views_per_clip != 1:
            raise TargetJobError("data.views_per_clip must be 1: a cached view is one decode")
        if self.loader not in ("dali", "reference"):
            raise TargetJobError(f"loader must be dali or reference, got {self.loader!r}")

    def loader_config(self) -> LoaderConfig:
        """The precompute loader's config: the run's data section (without DataConfig's extra keys)."""
        base = {f.name: getattr(self.data, f.name) for f in dataclasses.fields(LoaderConfig)}
        return dataclasses.replace(LoaderConfig(**base), mode="precompute", cached_views=self.num_views,
                                   batch_size=self.batch_size)


def job_device() -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")


def load_frozen_teacher(job: TargetJob, device: torch.device) -> VideoViT:
    from salt.engine.export import load_encoder

    teacher, info = load_encoder(job.teacher)
    grid = (job.data.num_frames // job.tubelet_size, job.data.crop_size // job.patch_size,
            job.data.crop_size // job.patch_size)
    if teacher.grid.shape != grid:
        raise TargetJobError(f"teacher {job.teacher} takes {info.num_frames}x{info.img_size}x{info.img_size} clips "
                             f"(patch {info.patch_size}, tubelet {info.tubelet_size}); the views are "
                             f"{job.data.num_frames}x{job.data.crop_size}x{job.data.crop_size} with patch "
                             f"{job.patch_size}, tubelet {job.tubelet_size}")
    freeze(teacher)  # as StudentObjective: frozen, eval mode, weights in teacher.dtype
    if job.teacher_dtype == "bf16":
        teacher.to(torch.bfloat16)
    return teacher.to(device)


def teacher_targets(teacher: VideoViT, clips: torch.Tensor, layers: tuple[int, ...] | None,
                    autocast: str | None) -> torch.Tensor:
    """clips (B, C, T, H, W) -> (B, N, D * len(layers)) float32 layer-normed targets, as the student stage."""
    ctx = torch.autocast(clips.device.type, dtype=AUTOCAST[autocast]) if autocast else nullcontext()
    with ctx, torch.no_grad():
        if layers is None:
            return compute_teacher_targets(teacher, clips)  # (B, N, D)
        dtype = next(teacher.parameters()).dtype
        hs = teacher.forward_layers(clips.to(dtype), list(layers))
        return torch.cat([F.layer_norm(h.float(), (h.shape[-1],)) for h in hs], dim=-1)


def decode_device(job: TargetJob) -> str:
    """Where the views are decoded: DALI on the CPU and on the GPU (NVDEC) differ in the last bits."""
    from salt.data.dali_loader import resolve_device

    return resolve_device(job.data.device) if job.loader == "dali" else "cpu"


def describe(job: TargetJob, shards: ShardSet, teacher: VideoViT) -> dict:
    """meta.json without counts: everything that decides the cache's contents (its job_id hashes this)."""
    from salt.engine.export import encoder_fingerprint

    grid = list(teacher.grid.shape)
    tokens, width = teacher.num_tokens, teacher.embed_dim * (len(job.layers) if job.layers else 1)
    c = codec(job.dtype)
    identity = {
        "teacher": {"fingerprint": teacher_fingerprint(job.teacher), "weights_sha256": encoder_fingerprint(job.teacher),
                    "weights_dtype": job.teacher_dtype, "autocast": job.autocast},
        "targets": {"definition": TARGETS_DEFINITION, "layer_normed": True,
                    "layers": list(job.layers) if job.layers else None, "tokens": tokens, "width": width, "grid": grid},
        "storage": {"dtype": job.dtype, "compression": "zstd",
                    "encoding": {"fp32": "float32", "bf16": "bfloat16 bits as uint16", "fp16": "float16",
                                 "fp8": "float8_e4m3fn bits as uint8, x = q * scale, scale = token absmax / 448 "
                                        "(float32 column 'scale')"}[job.dtype],
                    "raw_bytes_per_view": tokens * c.bytes_per_token(width)},
        "views": {"num_views": job.num_views, "recipe": recipe_section(job.data),
                  "definition": "view v of sample k = salt.data.views.train_view(recipe, k, v, ...) with "
                                "views_per_clip 1; the student loader uses v = cached_view_id(seed, k, epoch, K)"},
        "geometry": geometry_section(job.data, job.patch_size, job.tubelet_size),
        "shards": shard_set_id(shards.manifest),
        "decode": {"loader": job.loader, "device": decode_device(job)},
    }
    return {"format": FORMAT, "job_id": sha256_json(identity), "complete": False, **identity,
            "shards": {**identity["shards"], "path": str(Path(job.data.shards).resolve())},
            "teacher": {**identity["teacher"], "path": str(Path(job.teacher).resolve())},
            "job": {"loader_config": dataclasses.asdict(job.loader_config()), "batch_size": job.batch_size,
                    "compression_level": job.compression_level},
            "files": [{"shard": n, "file": file_name(n)} for n in shards.shard_names]}


def _differences(old: dict, new: dict) -> list[str]:
    return [k for k in ("teacher", "targets", "storage", "views", "geometry", "shards", "decode")
            if {kk: vv for kk, vv in old.get(k, {}).items() if kk != "path"} !=
            {kk: vv for kk, vv in new[k].items() if kk != "path"}]


def prepare_out(out: Path, meta: dict, mine: list[str], overwrite: bool) -> None:
    """Creates the folder, or checks that the cache in it was made by the same job. --overwrite removes this
    rank's files (each rank its own, so ranks never race) and replaces meta.json."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    if overwrite:
        for name in mine:
            (out / name).unlink(missing_ok=True)
        write_json_atomic(meta_path, meta)
        return
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("job_id") != meta["job_id"]:
            what = ", ".join(_differences(old, meta)) or "format"
            raise TargetJobError(f"{out} holds a cache made by another job (it differs in: {what}); choose another "
                                 "--out, or pass --overwrite to replace it")
    elif any(out.glob("*.arrow")):
        raise TargetJobError(f"{out} holds .arrow files but no {META}: not a target cache of this job; choose "
                             "another --out, or pass --overwrite")


def file_done(path: Path, meta: dict) -> bool:
    """A finished file of this job (a damaged or foreign one is done again)."""
    if not path.exists():
        return False
    try:
        read_file_index(open_arrow(path), path, meta["job_id"],
                        arrow_schema(meta["storage"]["dtype"], meta["targets"]["tokens"], meta["targets"]["width"]),
                        meta["views"]["num_views"])
        return True
    except TargetCacheError as e:
        print(f"rewriting {path.name}: {e}", flush=True)
        return False


def finalize(out: Path, meta: dict) -> bool:
    """When every file is there: meta.json with per-file and total counts, complete=true. Any rank may call it
    (the content is the same); the last rank to finish sees every file."""
    schema = arrow_schema(meta["storage"]["dtype"], meta["targets"]["tokens"], meta["targets"]["width"])
    files = []
    for f in meta["files"]:
        path = out / f["file"]
        if not path.exists():
            return False
        keys, bad = read_file_index(open_arrow(path), path, meta["job_id"], schema, meta["views"]["num_views"])
        files.append({**f, "samples": len(keys), "rows": len(keys) * meta["views"]["num_views"], "bad_keys": bad,
                      "bytes": path.stat().st_size})
    samples, rows = sum(f["samples"] for f in files), sum(f["rows"] for f in files)
    nbytes = sum(f["bytes"] for f in files)
    good = samples - sum(len(f["bad_keys"]) for f in files)
    counts = {"files": len(files), "samples": samples, "rows": rows, "bad_samples": samples - good, "bytes": nbytes,
              "bytes_per_clip": nbytes / max(1, samples), "bytes_per_view": nbytes / max(1, rows),
              "compression_ratio": meta["storage"]["raw_bytes_per_view"] * rows / max(1, nbytes)}
    write_json_atomic(out / META, {**meta, "complete": True, "files": files, "counts": counts})
    return True


@dataclass
class JobSummary:
    files_done: int
    files_skipped: int
    samples: int
    bad: int
    seconds: float
    complete: bool


def run_job(job: TargetJob, rank: int = 0, world: int = 1, overwrite: bool = False,
            progress: bool = True) -> JobSummary:
    job.validate()
    out = Path(job.out)
    shards = ShardSet(job.data.shards)
    device = job_device()
    teacher = load_frozen_teacher(job, device)
    meta = describe(job, shards, teacher)
    mine = [s for s in range(len(shards.shard_names)) if s % world == rank]
    prepare_out(out, meta, [file_name(shards.shard_names[s]) for s in mine], overwrite)
    todo = [s for s in mine if not file_done(out / file_name(shards.shard_names[s]), meta)]
    if todo:  # incomplete until the last rank finalizes
        write_json_atomic(out / META, meta)
    starts = np.searchsorted(shards.shard_ids, np.arange(len(shards.shard_names) + 1))
    t0 = time.perf_counter()
    samples, bad = 0, 0
    if todo:
        samples, bad = _compute(job, shards, teacher, meta, out, todo, starts, device, progress, rank)
    complete = finalize(out, meta)
    shards.close()
    return JobSummary(len(todo), len(mine) - len(todo), samples, bad, time.perf_counter() - t0, complete)


def _compute(job: TargetJob, shards: ShardSet, teacher: VideoViT, meta: dict, out: Path, todo: list[int],
             starts: np.ndarray, device: torch.device, progress: bool, rank: int) -> tuple[int, int]:
    from dataprep.targets_writer import ShardTargetWriter
    from salt.data.dali_loader import DaliVideoLoader
    from salt.data.reference_loader import ReferenceVideoLoader

    k = job.num_views
    schema = arrow_schema(job.dtype, meta["targets"]["tokens"], meta["targets"]["width"])

    def new_writer(s: int) -> ShardTargetWriter:
        return ShardTargetWriter(out, shards.shard_names[s], shards.keys[starts[s]:starts[s + 1]], schema,
                                 meta["job_id"], k, job.dtype, job.compression_level)

    for s in todo:  # a shard without samples (none in practice) still gets its (empty) file
        if starts[s] == starts[s + 1]:
            new_writer(s).finish()
    todo = [s for s in todo if starts[s] < starts[s + 1]]
    if not todo:
        return 0, 0
    cfg = job.loader_config()
    if job.loader == "dali":
        loader = DaliVideoLoader(cfg, only_shards=todo,
                                 device_id=device.index if device.type == "cuda" else None)
    else:
        loader = ReferenceVideoLoader(cfg, only_shards=todo)
    writers: dict[int, ShardTargetWriter] = {}
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")  # compression overlaps the teacher
    pending: deque[Future] = deque()
    total = int(sum(starts[s + 1] - starts[s] for s in todo))
    bar = tqdm(total=total, unit="clip", desc=f"targets rank {rank}", position=rank, disable=not progress,
               dynamic_ncols=True)
    done = 0
    try:
        with loader:
            for batch in loader:
                s, start, end = loader.planner.segments[batch.index]
                video = batch.video.to(device, non_blocking=True)  # (K * B, C, T, H, W), view-major
                values, scale = encode(teacher_targets(teacher, video, job.layers, job.autocast), job.dtype)
                b = len(batch.keys) // k
                rows = []
                for i in range(end - start):
                    key = shards.keys[start + i]
                    if batch.keys[i] != key:  # its place went to another sample: this one does not decode
                        rows.append((key, None, None))
                        continue
                    sel = [v * b + i for v in range(k)]
                    assert [batch.keys[r] for r in sel] == [key] * k and batch.view_ids[sel].tolist() == list(range(k))
                    rows.append((key, values[sel], None if scale is None else scale[sel]))
                if s not in writers:
                    writers[s] = new_writer(s)
                pending.append(io.submit(_write, writers, s, rows, end == starts[s + 1]))
                while len(pending) > 2:
                    pending.popleft().result()
                done += end - start
                bar.update(end - start)
            while pending:
                pending.popleft().result()
    except BaseException:
        for f in pending:
            f.cancel()
        io.shutdown(wait=True)
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()
    io.shutdown(wait=True)
    return done, loader.stats.bad_samples


def _write(writers: dict, s: int, rows: list, last: bool) -> None:
    w = writers[s]
    for key, values, scale in rows:
        w.add(key, values, scale)
    if last:
        w.finish()
        del writers[s]

