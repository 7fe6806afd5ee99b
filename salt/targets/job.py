"""The precompute job: every (sample, view) of a shard set through the frozen teacher, into a target cache.

Views come from the training loader itself in its precompute mode (salt.data: stored order, every view
id 0..K-1 of every sample, one decode per view, batches aligned to shards), so the pixels are the ones
the student loader produces for (key, view id). The teacher runs as in the student stage: weights in
`teacher.dtype`, under the DeepSpeed config's autocast, `compute_teacher_targets`. Shard s goes to rank
s % world; each finished file is renamed into place, so a rerun only does the files that are missing.

Each finished file's size and sha256 go into meta.json (under a lock file, `.meta.json.lock`, since
ranks finish files concurrently) before the file is renamed into place. SIGTERM and SIGINT stop the job
at the next batch boundary: the writes queued so far finish, the files still open are dropped, and
`run_job` returns with `stopped_by` set (the command exits 75). A failed write raises WriteError, one
line naming the file; finished files and meta.json stay valid either way, and a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from salt.atomic import file_sha256, reporting_write_errors, write_json_atomic
from salt.data.augment import one_torch_thread
from salt.data.config import LoaderConfig
from salt.data.loaders import LOADERS, open_loader
from salt.data.output import JobOutput, OutputError, RemoteOutput, open_output
from salt.data.shardset import ShardSet
from salt.devices import process_device
from salt.interrupt import StopFlag, Stopped
from salt.models import VideoViT
from salt.objectives.common import freeze
from salt.objectives.latent import compute_teacher_targets
from salt.precision import torch_dtype
from salt.resume import changed_settings
from salt.targets.fingerprint import (
    geometry_section,
    recipe_section,
    sha256_json,
    shard_set_id,
    teacher_fingerprint,
)
from salt.targets.format import (
    FORMAT,
    META,
    TARGETS_DEFINITION,
    TargetCacheError,
    arrow_schema,
    codec,
    encode,
    file_name,
    open_arrow,
    read_file_index,
)
from salt.targets.meta import CacheMeta


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
    staging: str | None = None  # an s3:// out: where files are made before their upload (salt.data.output)

    def validate(self) -> None:
        codec(self.dtype)
        if self.num_views < 1 or self.batch_size < 1:
            raise TargetJobError("--views and --batch-size must be >= 1")
        if self.data.views_per_clip != 1:
            raise TargetJobError("data.views_per_clip must be 1: a cached view is one decode")
        if self.loader not in LOADERS:
            raise TargetJobError(f"loader must be one of {LOADERS}, got {self.loader!r}")

    def loader_config(self) -> LoaderConfig:
        """The precompute loader's config: the run's data section (without DataConfig's extra keys)."""
        base = {f.name: getattr(self.data, f.name) for f in dataclasses.fields(LoaderConfig)}
        return dataclasses.replace(LoaderConfig(**base), mode="precompute", cached_views=self.num_views,
                                   batch_size=self.batch_size)


def job_device() -> torch.device:
    """This rank's device, as the trainer's: cuda:(local rank % visible GPUs), made current (DALI runs on
    it and batches are allocated there), or the CPU."""
    return process_device()


def load_frozen_teacher(job: TargetJob, device: torch.device) -> VideoViT:
    from salt.models.io import load_encoder

    teacher, info = load_encoder(job.teacher)
    grid = (job.data.num_frames // job.tubelet_size, job.data.crop_size // job.patch_size,
            job.data.crop_size // job.patch_size)
    if teacher.grid.shape != grid:
        raise TargetJobError(f"teacher {job.teacher} takes {info.num_frames}x{info.img_size}x{info.img_size} clips "
                             f"(patch {info.patch_size}, tubelet {info.tubelet_size}); the views are "
                             f"{job.data.num_frames}x{job.data.crop_size}x{job.data.crop_size} with patch "
                             f"{job.patch_size}, tubelet {job.tubelet_size}")
    freeze(teacher)  # as StudentObjective: frozen, eval mode, weights in teacher.dtype
    teacher.to(torch_dtype(job.teacher_dtype))
    return teacher.to(device)


def teacher_targets(teacher: VideoViT, clips: torch.Tensor, layers: tuple[int, ...] | None,
                    autocast: str | None) -> torch.Tensor:
    """clips (B, C, T, H, W) -> (B, N, D * len(layers)) float32 layer-normed targets, as the student stage.
    On the CPU with one torch thread: fp32 matmuls round otherwise with another thread count, and a cache
    must not depend on how many processes (each with its share of the cores) made it."""
    ctx = torch.autocast(clips.device.type, dtype=torch_dtype(autocast)) if autocast else nullcontext()
    threads = one_torch_thread() if clips.device.type == "cpu" else nullcontext()
    with threads, ctx, torch.no_grad():
        if layers is None:
            return compute_teacher_targets(teacher, clips)  # (B, N, D)
        dtype = next(teacher.parameters()).dtype
        hs = teacher.forward_layers(clips.to(dtype), list(layers))
        return torch.cat([F.layer_norm(h.float(), (h.shape[-1],)) for h in hs], dim=-1)


def decode_device(job: TargetJob) -> str:
    """Where the views are decoded: DALI on the CPU and on the GPU (NVDEC) differ in the last bits."""
    from salt.data.dali_loader import resolve_device

    return resolve_device(job.data.device, job_device()) if job.loader == "dali" else "cpu"


def describe(job: TargetJob, shards: ShardSet, teacher: VideoViT) -> dict:
    """meta.json without counts: everything that decides the cache's contents (its job_id hashes this)."""
    from salt.models.io import encoder_fingerprint

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


IDENTITY = ("teacher", "targets", "storage", "views", "geometry", "shards", "decode")  # meta.json's job_id hashes these


def _differences(old: dict, new: dict) -> list[str]:
    """The sections of meta.json in which two jobs differ (where a folder or file lies may change)."""
    changed = {k.split(".")[0] for k, *_ in changed_settings({k: old.get(k, {}) for k in IDENTITY},
                                                            {k: new[k] for k in IDENTITY}, ignore_leaf={"path"})}
    return [k for k in IDENTITY if k in changed]


LOCK = ".meta.json.lock"
FILE_KEYS = ("samples", "rows", "bad_keys", "bytes", "sha256")  # what meta.json records per finished file


@contextmanager
def meta_lock(out: Path):
    """Ranks update meta.json one at a time (read, change, atomic rewrite)."""
    path = out / LOCK
    with reporting_write_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _recorded(out: Path, meta: dict) -> dict[str, dict]:
    """file name -> its entry in the meta.json on disk, if that was written by this job."""
    try:
        old = json.loads((out / META).read_text())
    except (OSError, ValueError):
        return {}
    if old.get("job_id") != meta["job_id"]:
        return {}
    return {f["file"]: f for f in old.get("files", [])}


def _with_entries(meta: dict, entries: dict[str, dict], drop: set[str] = frozenset()) -> dict:
    files = []
    for f in meta["files"]:
        e = entries.get(f["file"]) if f["file"] not in drop else None
        files.append({**f, **{k: e[k] for k in FILE_KEYS if k in e}} if e else dict(f))
    return {**meta, "files": files}


def write_start_meta(out: Path, meta: dict, redo: set[str]) -> None:
    """meta.json while files are missing (complete=false), keeping what is recorded of finished files
    other than those to be written again."""
    with meta_lock(out):
        write_json_atomic(out / META, _with_entries(meta, _recorded(out, meta), drop=redo))


def record_file(out: Path, meta: dict, summary: dict) -> None:
    """Records one finished file (size, sha256, counts) in meta.json; called before it is renamed into place."""
    with meta_lock(out):
        entries = _recorded(out, meta)
        entries[summary["file"]] = summary
        write_json_atomic(out / META, {**_with_entries(meta, entries), "complete": False})


def prepare_out(out: Path, meta: dict, mine: list[str], overwrite: bool) -> None:
    """Creates the folder, or checks that the cache in it was made by the same job. --overwrite removes this
    rank's files (each rank its own, so ranks never race) and replaces meta.json."""
    with reporting_write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    if overwrite:
        for name in mine:
            (out / name).unlink(missing_ok=True)
        write_start_meta(out, meta, set(mine))
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


def file_done(path: Path, meta: dict, recorded: dict | None = None) -> bool:
    """A finished file of this job (a damaged or foreign one is done again). Cheap: the size recorded in
    meta.json and the footer are checked, not the hash (`--verify` and the readers check that)."""
    if not path.exists():
        return False
    typed = CacheMeta.from_dict(meta)
    try:
        read_file_index(open_arrow(path, (recorded or {}).get("bytes")), path, typed.job_id, typed.schema(),
                        typed.num_views)
        return True
    except TargetCacheError as e:
        print(f"rewriting {path.name}: {e}", flush=True)
        return False


def finalize(out: Path, meta: dict) -> bool:
    """When every file is there: meta.json with per-file and total counts, complete=true. Any rank may call it
    (the content is the same); the last rank to finish sees every file. A file whose sha256 is not recorded
    (a cache made before hashes were, or a job killed between recording and renaming) is hashed here."""
    with meta_lock(out):
        return _finalize(out, meta)


def _finalize(out: Path, meta: dict) -> bool:
    typed = CacheMeta.from_dict(meta)
    schema, k = typed.schema(), typed.num_views
    recorded = _recorded(out, meta)
    files = []
    for f in meta["files"]:
        path = out / f["file"]
        if not path.exists():
            return False
        keys, bad = read_file_index(open_arrow(path), path, typed.job_id, schema, k)
        size = path.stat().st_size
        r = recorded.get(f["file"], {})
        digest = r["sha256"] if r.get("sha256") and r.get("bytes") == size else file_sha256(path)
        files.append({**f, "samples": len(keys), "rows": len(keys) * k, "bad_keys": bad,
                      "bytes": size, "sha256": digest})
    write_json_atomic(out / META, {**meta, "complete": True, "files": files, "counts": _counts(meta, files)})
    return True


def _counts(meta: dict, files: list[dict]) -> dict:
    samples, rows = sum(f["samples"] for f in files), sum(f["rows"] for f in files)
    nbytes = sum(f["bytes"] for f in files)
    good = samples - sum(len(f["bad_keys"]) for f in files)
    return {"files": len(files), "samples": samples, "rows": rows, "bad_samples": samples - good, "bytes": nbytes,
            "bytes_per_clip": nbytes / max(1, samples), "bytes_per_view": nbytes / max(1, rows),
            "compression_ratio": meta["storage"]["raw_bytes_per_view"] * rows / max(1, nbytes)}


@dataclass
class JobSummary:
    files_done: int
    files_skipped: int
    samples: int
    bad: int
    seconds: float
    complete: bool
    stopped_by: str | None = None  # SIGTERM / SIGINT: stopped early, resumable
    files_finished: int = 0  # files of the whole cache (all ranks) under their final name
    files_total: int = 0


def finished_files(out: Path, meta: dict, store: JobOutput | None = None) -> int:
    """Files of the whole cache (every rank's) in place: under their final name, or published."""
    if isinstance(store, RemoteOutput):
        return sum(store.read_text(record_name(f["file"])) is not None for f in meta["files"])
    return sum((out / f["file"]).exists() for f in meta["files"])


RECORDS = ".files"  # an object-store cache: one record per published file (what meta.json records of it)


def record_name(file: str) -> str:
    return f"{RECORDS}/{file}.json"


def publish_file(store: RemoteOutput, out: Path, summary: dict) -> None:
    """A finished cache file of an object-store output: uploaded (visible once complete), then its record
    (so a record always names a published file), then dropped from the staging folder."""
    store.publish(summary["file"])
    (out / RECORDS).mkdir(exist_ok=True)
    write_json_atomic(out / record_name(summary["file"]), summary)
    store.publish(record_name(summary["file"]))
    store.drop_local(summary["file"])


def finalize_remote(store: RemoteOutput, meta: dict) -> bool:
    """When every file is published: meta.json with per-file and total counts, complete=true, published last.
    From the files' records (each rank publishes its own), so ranks on other machines need not share a disk;
    two ranks finishing at once write the same meta.json."""
    files = []
    for f in meta["files"]:
        text = store.read_text(record_name(f["file"]))
        if text is None:
            return False
        r = json.loads(text)
        files.append({**f, **{k: r[k] for k in FILE_KEYS}})
    write_json_atomic(store.local / META, {**meta, "complete": True, "files": files, "counts": _counts(meta, files)})
    store.publish(META)
    return True


def run_job(job: TargetJob, rank: int = 0, world: int = 1, overwrite: bool = False,
            progress: bool = True) -> JobSummary:
    """SIGTERM and SIGINT (to this process) stop it at the next batch boundary; it then returns with
    `stopped_by` set. Write failures raise WriteError."""
    stop = StopFlag().install()
    try:
        return _run(job, rank, world, overwrite, progress, stop)
    finally:
        stop.uninstall()


def _run(job: TargetJob, rank: int, world: int, overwrite: bool, progress: bool, stop: StopFlag) -> JobSummary:
    job.validate()
    try:
        store = open_output(job.out, job.staging)
        store.prepare()
    except OutputError as e:
        raise TargetJobError(str(e)) from None
    out = store.local  # this rank's folder: the cache folder, or the staging folder of an object store
    shards = ShardSet(job.data.shards)
    device = job_device()
    teacher = load_frozen_teacher(job, device)
    meta = describe(job, shards, teacher)
    mine = [s for s in range(len(shards.shard_names)) if s % world == rank]
    remote = isinstance(store, RemoteOutput)
    if remote:  # resume from what the store holds: its meta.json and its files' records
        if overwrite:
            store.remove(*[n for s in mine for n in (file_name(shards.shard_names[s]),
                                                     record_name(file_name(shards.shard_names[s])))])
        for name in (META, *[record_name(f["file"]) for f in meta["files"]]):
            text = store.read_text(name)
            if text is not None:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_text(text)
        store.abort_unfinished()
    prepare_out(out, meta, [file_name(shards.shard_names[s]) for s in mine], overwrite)
    recorded = _recorded(out, meta)

    def done(s: int) -> bool:
        name = file_name(shards.shard_names[s])
        if remote:
            rec = (out / record_name(name))
            return rec.exists() and store.size(name) == json.loads(rec.read_text())["bytes"]
        return file_done(out / name, meta, recorded.get(name))

    todo = [s for s in mine if not done(s)]
    if todo:  # incomplete until the last rank finalizes
        write_start_meta(out, meta, {file_name(shards.shard_names[s]) for s in todo})
        if remote and store.read_text(META) is None:
            store.publish(META)  # the job's identity (complete=false) until the last file is in
    starts = np.searchsorted(shards.shard_ids, np.arange(len(shards.shard_names) + 1))
    t0 = time.perf_counter()
    samples, bad = 0, 0
    try:
        if todo:
            if stop:
                raise Stopped(stop.signame)
            samples, bad = _compute(job, shards, teacher, meta, out, todo, starts, device, progress, rank, stop,
                                    (lambda summary: publish_file(store, out, summary)) if remote else None)
    except Stopped as e:
        shards.close()
        return JobSummary(0, len(mine) - len(todo), samples, bad, time.perf_counter() - t0, False, e.signame,
                          finished_files(out, meta, store), len(meta["files"]))
    complete = finalize_remote(store, meta) if remote else finalize(out, meta)
    shards.close()
    return JobSummary(len(todo), len(mine) - len(todo), samples, bad, time.perf_counter() - t0, complete, None,
                      finished_files(out, meta, store), len(meta["files"]))


def _compute(job: TargetJob, shards: ShardSet, teacher: VideoViT, meta: dict, out: Path, todo: list[int],
             starts: np.ndarray, device: torch.device, progress: bool, rank: int,
             stop: StopFlag | None = None, published=None) -> tuple[int, int]:
    """published(summary): called once a file is in place under its final name (an object store uploads it)."""
    from salt.targets.writer import ShardTargetWriter

    k = job.num_views
    schema = arrow_schema(job.dtype, meta["targets"]["tokens"], meta["targets"]["width"])

    def new_writer(s: int) -> ShardTargetWriter:
        return ShardTargetWriter(out, shards.shard_names[s], shards.keys[starts[s]:starts[s + 1]], schema,
                                 meta["job_id"], k, job.dtype, job.compression_level)

    def record(summary: dict) -> None:
        record_file(out, meta, summary)

    for s in todo:  # a shard without samples (none in practice) still gets its (empty) file
        if starts[s] == starts[s + 1]:
            w = new_writer(s)
            try:
                w.finish(record, published)
            except BaseException:
                w.abort()
                raise
    todo = [s for s in todo if starts[s] < starts[s + 1]]
    if not todo:
        return 0, 0
    cfg = job.loader_config()
    loader = open_loader(cfg, job.loader, device=device, only_shards=todo)
    writers: dict[int, ShardTargetWriter] = {}
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")  # compression overlaps the teacher
    pending: deque[Future] = deque()
    total = int(sum(starts[s + 1] - starts[s] for s in todo))
    bar = tqdm(total=total, unit="clip", desc=f"targets rank {rank}", position=rank, disable=not progress,
               dynamic_ncols=True)
    done = 0
    stop = stop if stop is not None else StopFlag()
    try:
        with loader:
            if stop:
                raise Stopped(stop.signame)
            for batch in loader:
                s, start, end = loader.planner.segments[batch.index]
                video = batch.model_input(device)  # (K * B, C, T, H, W) float, view-major
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
                pending.append(io.submit(_write, writers, s, rows, end == starts[s + 1], record, published))
                while len(pending) > 2:
                    pending.popleft().result()
                done += end - start
                bar.update(end - start)
                if stop and batch.index + 1 < len(loader):  # a batch boundary (not the last): let the queued
                    # writes finish (they may complete files), then stop
                    while pending:
                        pending.popleft().result()
                    raise Stopped(stop.signame)
            while pending:
                pending.popleft().result()
    except BaseException as e:
        for f in pending:
            f.cancel()
        io.shutdown(wait=True)
        for w in list(writers.values()):
            w.abort()
        if stop and not isinstance(e, (Stopped, OSError)):
            # what the signal broke on its way (a loader worker it reached first): still a stop
            raise Stopped(stop.signame) from e
        raise
    finally:
        bar.close()
    io.shutdown(wait=True)
    return done, loader.stats.bad_samples


def _write(writers: dict, s: int, rows: list, last: bool, record=None, published=None) -> None:
    w = writers[s]
    for key, values, scale in rows:
        w.add(key, values, scale)
    if last:
        w.finish(record, published)
        del writers[s]

