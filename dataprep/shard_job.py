"""The shard job as a library: videos → WebDataset tar shards (`run_job`), its config and summary, and the
merge of `--part K/N` jobs. `python -m dataprep.shards` (dataprep/shards.py) is its command line, and
dataprep/ray_shards.py runs it on Ray; both import this module, and it imports neither.

Each input video is decoded, resampled to a constant frame rate, resized, optionally cut into clips
and re-encoded with a short closed GOP. Samples are assigned to shards in the order of the sorted
input list, so the shards' contents do not depend on `--workers`. Shards are written under a
temporary name and renamed when complete; a journal beside them lets a rerun resume. See README.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dataprep.inputs import (
    InputScan,
    InputVideo,
    SkippedFile,
    inputs_fingerprint,
    part_slice,
    read_label_hflip,
    scan_inputs,
)
from dataprep.journal import JobMismatch, Journal, Segment
from dataprep.pool import TaskLost, WorkerPool
from dataprep.tarshard import ShardWriter, tmp_name
from dataprep.transcode import (
    Probe,
    TranscodeFailure,
    TranscodeOptions,
    VideoResult,
    probe_video,
    transcode_video,
)
from salt.atomic import WriteError, write_json_atomic, write_jsonl_atomic
from salt.data.codecs import DEFAULT_CODEC, codec_spec
from salt.data.output import JobOutput, OutputError, open_output
from salt.data.train_clip import TrainClip
from salt.interrupt import raise_on_stop_signals

MANIFEST_FORMAT = "salt-shards/1"
TAR_OVERHEAD = 3 * 1024  # tar headers and padding of one sample's three members, upper bound


class JobError(Exception):
    """A job-level failure with a message for the user (bad arguments, failure budget exceeded)."""


@dataclass(frozen=True)
class TimeBudget:
    """Wall-clock limits per input: a worker past its limit is killed and the input recorded as `timeout`.

    A transcode may take `per_second` seconds per second of input video plus `minimum` (a header that
    gives no duration gets 10 x minimum); `fixed` replaces that rule with one limit for every video.
    Opening a file to read its headers gets `minimum` (or `fixed` when smaller)."""

    fixed: float | None = None  # seconds; None: scaled to each input's duration
    per_second: float = 10.0
    minimum: float = 60.0

    def probe(self) -> float:
        return min(self.minimum, self.fixed) if self.fixed else self.minimum

    def transcode(self, seconds: float | None) -> float:
        if self.fixed:
            return self.fixed
        return self.minimum + self.per_second * seconds if seconds is not None else 10 * self.minimum


@dataclass(frozen=True)
class JobConfig:
    """The options that decide the shards' contents (saved in the journal and the manifest)."""

    input: str
    name: str
    codec: str = DEFAULT_CODEC
    fps: str | None = None  # a fraction like "30000/1001" or "15"; None keeps the source rate
    train_clip: str | None = None  # FRAMESxSTRIDE@FPS: store at FPS / STRIDE, the rate a run samples
    short_side: int = 256
    clip_seconds: float | None = None
    gop: int = 16
    quality: int | None = None
    min_frames: int = 16
    shard_size_mb: float = 256.0
    shard_samples: int = 0
    max_fail_frac: float = 0.05
    part: int | None = None
    num_parts: int | None = None

    def clip(self) -> TrainClip | None:
        return TrainClip.parse(self.train_clip) if self.train_clip else None

    def output_fps(self) -> Fraction | None:
        clip = self.clip()
        return clip.stored_fps if clip else (Fraction(self.fps) if self.fps else None)

    def transcode_options(self) -> TranscodeOptions:
        clip = self.clip()
        # a sample shorter than the training clip cannot give one
        min_frames = max(self.min_frames, clip.frames) if clip else self.min_frames
        return TranscodeOptions(codec=codec_spec(self.codec), fps=self.output_fps(), short_side=self.short_side,
                                clip_seconds=self.clip_seconds, gop=self.gop, quality=self.quality,
                                min_frames=min_frames)

    @property
    def prefix(self) -> str:
        return self.name if self.part is None else f"{self.name}-p{self.part:04d}"

    @property
    def suffix(self) -> str:
        return "" if self.part is None else f"-p{self.part:04d}"

    def validate(self) -> None:
        codec_spec(self.codec)
        if self.fps is not None:
            try:
                fps = Fraction(self.fps)
            except (ValueError, ZeroDivisionError):
                raise JobError(f"--fps takes a frame rate like 15 or 30000/1001, got {self.fps!r}") from None
            if fps <= 0:
                raise JobError(f"--fps must be positive, got {self.fps}")
        if self.train_clip is not None:
            try:
                clip = TrainClip.parse(self.train_clip)
            except ValueError as e:
                raise JobError(f"--train-clip: {e}") from None
            if self.fps is not None and Fraction(self.fps) != clip.stored_fps:
                raise JobError(f"--train-clip {self.train_clip} stores {clip.stored_fps} fps, but --fps says "
                               f"{self.fps}: give one of them")
        if self.short_side < 0 or self.short_side % 2:
            raise JobError(f"--short-side must be an even number >= 0 (0 keeps the size), got {self.short_side}")
        if self.gop < 1 or self.min_frames < 1:
            raise JobError("--gop and --min-frames must be >= 1")
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise JobError(f"--clip-seconds must be positive, got {self.clip_seconds}")
        if not 0 <= self.max_fail_frac <= 1:
            raise JobError(f"--max-fail-frac must be in [0, 1], got {self.max_fail_frac}")
        if self.shard_size_mb <= 0 and self.shard_samples <= 0:
            raise JobError("set --shard-size or --shard-samples to a positive value")
        if not self.name or any(c in self.name for c in "./ "):
            raise JobError(f"shard set name {self.name!r} may not be empty or contain '.', '/' or spaces")


# the command line's defaults are the job's
JOB_DEFAULTS = {f.name: f.default for f in fields(JobConfig) if f.default is not MISSING}


@dataclass
class JobSummary:
    manifest: dict[str, Any]
    wall_seconds: float
    resumed_shards: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def format(self, max_listed: int = 10) -> str:
        m = self.manifest
        lines = [
            f"shard set   {m['name']}  ({m['codec']}, {m['fps'] or 'source'} fps, short side {m['short_side']}, gop {m['gop']})",
            f"files       {m.get('num_files_seen', m['num_inputs'])} seen: {m['num_ok']} sharded, "
            f"{m['num_failed']} failed, {m.get('num_skipped', 0)} skipped",
            f"samples     {m['num_samples']} in {m['num_shards']} shards, {m['total_bytes'] / 1e6:.1f} MB",
            f"video       {m['total_input_seconds']:.1f} s in, {m['total_output_frames']} frames out",
        ]
        if m["classes"]:
            lines.append(f"classes     {len(m['classes'])}: {', '.join(m['classes'][:12])}"
                         + (" ..." if len(m["classes"]) > 12 else ""))
        if m["failure_reasons"]:
            lines.append("failures    " + "; ".join(f"{n}x {r}" for r, n in m["failure_reasons"].items()))
        for title, rows in (("failed", self.failures), ("skipped", m.get("skipped", []))):
            for row in rows[:max_listed]:
                lines.append(f"  {title:8s}  {row['path']}: {row['reason']}")
            if len(rows) > max_listed:
                where = "failures.jsonl" if title == "failed" else "manifest.json"
                lines.append(f"  {title:8s}  ... and {len(rows) - max_listed} more (see {where})")
        if self.wall_seconds > 0 and self.resumed_shards == 0:
            lines.append(f"throughput  {m['total_input_seconds'] / self.wall_seconds:.1f} s of video per s "
                         f"({self.wall_seconds:.1f} s wall)")
        elif self.resumed_shards:
            lines.append(f"resumed     {self.resumed_shards} shards were already complete")
        return "\n".join(lines)


def sample_key(inp: InputVideo, clip_index: int) -> str:
    return f"{inp.index:08d}-{clip_index:04d}"


def _work(args: tuple[InputVideo, TranscodeOptions, int]) -> VideoResult | tuple[InputVideo, str]:
    inp, opts, skip = args
    try:
        return transcode_video(inp, opts, skip_clips=skip)
    except TranscodeFailure as e:
        return inp, str(e)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the job; its reason is recorded
        return inp, f"internal error: {type(e).__name__}: {e}"


def _lost_reason(lost: TaskLost, what: str) -> str:
    if lost.kind == "timeout":
        return f"timeout: {what} {lost.detail}"
    return f"decoder crashed the worker process ({what}: {lost.detail})"


def _sample_meta(res: VideoResult, clip, key: str, label_index: int | None, codec: str) -> dict[str, Any]:
    return {
        "key": key, "source": res.input.source, "label": res.input.label, "label_index": label_index,
        "fps": float(res.fps), "fps_fraction": str(res.fps), "frames": clip.frames,
        "width": res.width, "height": res.height, "clip_index": clip.clip_index,
        "clip_start_frame": clip.start_frame, "clip_start": float(clip.start_frame / res.fps),
        "codec": codec, "source_fps": float(res.source_fps), "source_frames_header": res.source_frames_header,
        "source_frames_decoded": res.source_frames_decoded, "decode_error": res.decode_error,
    }


def _input_summary(res: VideoResult) -> dict[str, Any]:
    return {"index": res.input.index, "source": res.input.source, "label": res.input.label,
            "seconds": res.source_seconds, "clips": len(res.clips), "output_frames": res.output_frames,
            "width": res.width, "height": res.height, "fps": str(res.fps),
            "frames_decoded": res.source_frames_decoded, "frames_header": res.source_frames_header,
            "decode_error": res.decode_error}


def open_journal(output: JobOutput, suffix: str) -> Journal:
    """The job's journal in its local folder, mirrored to an object-store output."""
    return Journal(output.local / f".journal{suffix}", present=lambda name, size: output.size(name) == size,
                   on_write=output.publish, on_remove=output.remove)


def run_job(cfg: JobConfig, out: str | Path | JobOutput, workers: int = 1, overwrite: bool = False,
            progress: bool = True, budget: TimeBudget | None = None, pool: WorkerPool | None = None,
            handle_signals: bool = True, scan: InputScan | None = None) -> JobSummary:
    """Raises JobError (bad arguments, failure budget, a write that failed) and Stopped (SIGTERM or
    SIGINT: the shard being filled is discarded, finished ones stay, and a rerun resumes).

    out: a folder, s3://BUCKET/PREFIX or a JobOutput (salt.data.output: an object store is written through
    a local staging folder, each file uploaded when finished, the manifest last).
    pool: worker processes to use instead of starting `workers` new ones (a Ray worker keeps one
    across its tasks). handle_signals=False leaves SIGTERM and SIGINT to the caller (Ray's own).
    scan: the input listing when the caller already made it (every part of a Ray job shares one)."""
    cfg.validate()
    try:
        output = open_output(out)
        output.prepare()
    except OutputError as e:
        raise JobError(str(e)) from None
    budget = budget or TimeBudget()
    t_start = time.perf_counter()
    scan = scan or scan_inputs(cfg.input)
    all_inputs = scan.inputs
    if not all_inputs:
        set_aside = f" ({len(scan.skipped)} files set aside: {_skip_digest(scan.skipped)})" if scan.skipped else ""
        raise JobError(f"no video files found in {cfg.input}{set_aside}")
    classes = sorted({v.label for v in all_inputs if v.label is not None})
    label_index = {c: i for i, c in enumerate(classes)}
    try:
        read_label_hflip(cfg.input, classes)  # refused now rather than when the manifest is written
    except ValueError as e:
        raise JobError(str(e)) from None
    inputs = all_inputs if cfg.part is None else part_slice(all_inputs, cfg.part, cfg.num_parts or 1)
    # files set aside by the scan are listed once: in the single job, or in part 0
    scan_skipped = [f.to_json() for f in scan.skipped] if not cfg.part else []
    out = output.local  # where this process writes; each finished file is published from here

    journal = open_journal(output, cfg.suffix)
    try:
        if overwrite:
            journal.clear()
            output.remove(f".journal{cfg.suffix}", *output.glob(f"{cfg.prefix}-[0-9]*.tar"),
                          *output.glob(f"{cfg.prefix}-[0-9]*.idx"))
            for p in list(out.glob(f"{cfg.prefix}-[0-9]*.tar")) + list(out.glob(f"{cfg.prefix}-[0-9]*.idx")):
                p.unlink()
        output.abort_unfinished()  # uploads a killed run left unfinished: never visible, aborted now
        output.pull(f".journal{cfg.suffix}")  # a rerun elsewhere resumes from the store's journal
        # the failure budget may change between runs (raise it and rerun); nothing else that shapes shards may
        contents = {k: v for k, v in asdict(cfg).items() if k != "max_fail_frac"}
        journal.begin({**contents, "inputs": inputs_fingerprint(inputs), "classes": classes})
    except JobMismatch as e:
        raise JobError(str(e)) from None
    except WriteError as e:
        raise JobError(str(e)) from None
    segments = journal.segments()
    if journal.complete():
        return _summary(cfg, output, inputs, classes, segments, journal.tail(), scan_skipped, 0.0, len(segments))

    next_input, next_clip = segments[-1]["next"] if segments else (0, 0)
    todo = [v for v in inputs if v.index >= next_input]
    opts = cfg.transcode_options()
    max_failed = int(cfg.max_fail_frac * len(inputs))
    failed_before = sum(len(s["failures"]) for s in segments)
    max_bytes = cfg.shard_size_mb * 1e6 if cfg.shard_size_mb > 0 else float("inf")

    state = _WriterState(output, cfg.prefix, journal, len(segments))
    seconds_done, failed = 0.0, failed_before
    bar = None
    try:
        signals = raise_on_stop_signals() if handle_signals else contextlib.nullcontext(lambda: None)
        workers_cm = contextlib.nullcontext(pool) if pool else WorkerPool(max(1, min(workers, len(todo) or 1)))
        with signals as check_stop, workers_cm as pool:
            probes = list(tqdm(pool.ordered_map(probe_video, todo, timeout=lambda _: budget.probe()),
                               total=len(todo), unit="file", disable=not progress, desc=f"probe {cfg.prefix}",
                               dynamic_ncols=True, leave=False))
            videos = [p for p in probes if isinstance(p, Probe) and p.failure is None]
            seconds = {p.input.index: p.seconds for p in videos}
            work = [(p.input, opts, next_clip if p.input.index == next_input else 0) for p in videos]
            transcoded = pool.ordered_map(_work, work, timeout=lambda w: budget.transcode(seconds[w[0].index]))
            bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), unit="video", disable=not progress,
                       desc=f"shards {cfg.prefix}", dynamic_ncols=True)
            for probe in probes:
                if isinstance(probe, TaskLost):
                    res: VideoResult | tuple[InputVideo, str] = (probe.item, _lost_reason(probe, "opening the file"))
                elif probe.failure is not None:
                    res = (probe.input, probe.failure)
                else:
                    res = next(transcoded)
                    if isinstance(res, TaskLost):
                        res = (res.item[0], _lost_reason(res, "transcode"))
                bar.update(1)
                check_stop()  # a stop signal whose exception a finalizer swallowed
                if isinstance(res, tuple):
                    inp, reason = res
                    if isinstance(probe, Probe) and probe.failure is not None and not inp.claims_video:
                        state.segment.skipped.append({"index": inp.index, "path": inp.source,
                                                      "reason": f"not a video: {reason}"})
                        continue
                    state.segment.failures.append({"index": inp.index, "path": inp.source, "reason": reason})
                    failed += 1
                    if failed > max_failed:
                        raise JobError(f"{failed} of {len(inputs)} inputs failed, more than --max-fail-frac "
                                       f"{cfg.max_fail_frac} allows ({max_failed}); stopping. Latest: "
                                       f"{inp.source}: {reason}")
                else:
                    _write_video(res, state, cfg, label_index, max_bytes)
                    seconds_done += res.source_seconds
                bar.set_postfix(video_s=f"{seconds_done:.0f}", failed=failed, shards=state.number)
            state.finish(next_pos=(inputs[-1].index + 1 if inputs else 0, 0))
    except (JobError, WriteError) as e:
        state.abort()
        done = [f for s in journal.segments() for f in s["failures"]] + state.segment.failures
        try:
            write_jsonl_atomic(out / f"failures{cfg.suffix}.jsonl", done)
            output.publish(f"failures{cfg.suffix}.jsonl")
        except (WriteError, OSError):
            pass  # the disk is full: the journal still holds every finished shard's failures
        raise JobError(str(e)) from None
    except BaseException:
        state.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    segments = journal.segments()
    return _summary(cfg, output, inputs, classes, segments, journal.tail(), scan_skipped,
                    time.perf_counter() - t_start, 0 if not segments else len(segments) - state.written)


def _skip_digest(skipped: list[SkippedFile], n: int = 3) -> str:
    shown = ", ".join(f"{f.source} ({f.reason})" for f in skipped[:n])
    return shown + (f", and {len(skipped) - n} more" if len(skipped) > n else "")


class _WriterState:
    """The shard being filled and the journal segment it closes."""

    def __init__(self, output: JobOutput, prefix: str, journal: Journal, number: int):
        self.output, self.out, self.prefix, self.journal, self.number = output, output.local, prefix, journal, number
        self.writer: ShardWriter | None = None
        self.segment = Segment()
        self.written = 0

    def add(self, key: str, components: dict[str, bytes]) -> None:
        if self.writer is None:
            self.writer = ShardWriter(self.out / f"{self.prefix}-{self.number:06d}.tar")
        self.writer.write(key, components)

    def close(self, next_pos: tuple[int, int]) -> None:
        assert self.writer is not None
        info = self.writer.close()
        self.output.publish(info.index, info.path)  # an object store: uploaded, each visible once complete
        self.output.drop_local(info.path, info.index)
        self.journal.write_segment(self.number, info.to_json(), self.segment, next_pos)
        self.writer, self.segment = None, Segment()
        self.number += 1
        self.written += 1

    def finish(self, next_pos: tuple[int, int]) -> None:
        if self.writer is not None:
            self.close(next_pos)
        self.journal.write_end(self.segment)

    def abort(self) -> None:
        """Discards the shard being filled, also one whose partial file a stop signal left without a writer
        (raised while the writer was being opened, before `add` held it)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        final = self.out / f"{self.prefix}-{self.number:06d}.tar"
        for partial in (tmp_name(final), tmp_name(final.with_suffix(".idx"))):
            partial.unlink(missing_ok=True)


def _write_video(res: VideoResult, state: _WriterState, cfg: JobConfig, label_index: dict[str, int],
                 max_bytes: float) -> None:
    lidx = label_index.get(res.input.label) if res.input.label is not None else None
    ext = codec_spec(cfg.codec).ext
    for j, clip in enumerate(res.clips):
        key = sample_key(res.input, clip.clip_index)
        meta = _sample_meta(res, clip, key, lidx, cfg.codec)
        components = {ext: clip.payload, "json": json.dumps(meta, sort_keys=True).encode()}
        if lidx is not None:
            components["cls"] = str(lidx).encode()
        size = sum(len(v) for v in components.values()) + TAR_OVERHEAD
        if state.writer is not None and state.writer.samples and state.writer.bytes + size > max_bytes:
            state.close(next_pos=(res.input.index, clip.clip_index))
        state.add(key, components)
        last = j == len(res.clips) - 1
        if last:
            state.segment.inputs.append(_input_summary(res))
        if cfg.shard_samples and state.writer.samples >= cfg.shard_samples:
            nxt = (res.input.index + 1, 0) if last else (res.input.index, res.clips[j + 1].clip_index)
            state.close(next_pos=nxt)
    if not res.clips:  # resumed mid-video and every remaining clip was already written
        state.segment.inputs.append(_input_summary(res))


def _summary(cfg: JobConfig, output: JobOutput, inputs: list[InputVideo], classes: list[str],
             segments: list[dict[str, Any]], tail: Segment, scan_skipped: list[dict[str, Any]],
             wall_seconds: float, resumed: int) -> JobSummary:
    """Write manifest and failures from the journal; together they name every file exactly once. The
    manifest is published last: a reader finds a shard set only once every shard is in place."""
    done_inputs = [i for s in segments for i in s["inputs"]] + tail.inputs
    failures = [f for s in segments for f in s["failures"]] + tail.failures
    skipped = scan_skipped + [f for s in segments for f in s.get("skipped", [])] + tail.skipped
    shards = [s["shard"] for s in segments]
    manifest = build_manifest(cfg, classes, shards, done_inputs, failures, skipped)
    try:
        write_jsonl_atomic(output.local / f"failures{cfg.suffix}.jsonl", failures)
        write_json_atomic(output.local / f"manifest{cfg.suffix}.json", manifest)
        output.publish(f"failures{cfg.suffix}.jsonl", f"manifest{cfg.suffix}.json")
    except WriteError as e:
        raise JobError(str(e)) from None
    return JobSummary(manifest, wall_seconds, resumed, failures)


def build_manifest(cfg: JobConfig, classes: list[str], shards: list[dict[str, Any]],
                   done_inputs: list[dict[str, Any]], failures: list[dict[str, Any]],
                   skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """num_files_seen = num_ok + num_failed + num_skipped: every file of the input is one of them."""
    spec = codec_spec(cfg.codec)
    reasons = Counter(_reason_kind(f["reason"]) for f in failures)
    return {
        "format": MANIFEST_FORMAT,
        "name": cfg.name,
        "codec": cfg.codec,
        "video_ext": spec.ext,
        "decodable_on": [d for d, ok in (("cpu", spec.dali_cpu), ("gpu", spec.dali_gpu)) if ok],
        "fps": str(cfg.clip().stored_fps) if cfg.clip() else cfg.fps,
        "train_clip": cfg.clip().to_json() if cfg.clip() else None,
        "short_side": cfg.short_side,
        "gop": cfg.gop,
        "clip_seconds": cfg.clip_seconds,
        "classes": classes,
        "label_hflip": read_label_hflip(cfg.input, classes) if classes else None,
        "num_files_seen": len(done_inputs) + len(failures) + len(skipped),
        "num_inputs": len(done_inputs) + len(failures),
        "num_ok": len(done_inputs),
        "num_failed": len(failures),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "failure_reasons": dict(reasons.most_common()),
        "num_shards": len(shards),
        "num_samples": sum(s["samples"] for s in shards),
        "total_bytes": sum(s["bytes"] for s in shards),
        "total_input_seconds": round(sum(i["seconds"] for i in done_inputs), 3),
        "total_output_frames": sum(i["output_frames"] for i in done_inputs),
        "frame_sizes": dict(Counter(f"{i['width']}x{i['height']}" for i in done_inputs).most_common()),
        "frame_rates": dict(Counter(i["fps"] for i in done_inputs).most_common()),
        "partly_decoded": sum(1 for i in done_inputs if i["decode_error"]
                              or (i["frames_header"] and i["frames_decoded"] < i["frames_header"])),
        "shards": shards,
        "options": asdict(cfg),
    }


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def merge_parts(out: str | Path | JobOutput) -> dict[str, Any]:
    """Combine the manifests of all `--part K/N` jobs written into `out` into manifest.json (published
    last, after failures.jsonl)."""
    try:
        output = open_output(out)
        output.prepare()
    except OutputError as e:
        raise JobError(str(e)) from None
    parts = output.glob("manifest-p[0-9][0-9][0-9][0-9].json")
    if not parts:
        raise JobError(f"no part manifests (manifest-pNNNN.json) in {output}; run the --part jobs first")
    manifests = [json.loads(output.read_text(p)) for p in parts]
    num_parts = {m["options"]["num_parts"] for m in manifests}
    if len(num_parts) != 1:
        raise JobError(f"part manifests in {output} disagree on the number of parts: {sorted(num_parts)}")
    n = num_parts.pop()
    have = sorted(m["options"]["part"] for m in manifests)
    missing = sorted(set(range(n)) - set(have))
    if missing:
        raise JobError(f"cannot merge {output}: parts {missing} of {n} have not finished")
    base = {k: v for k, v in manifests[0]["options"].items() if k not in ("part",)}
    for m in manifests[1:]:
        other = {k: v for k, v in m["options"].items() if k not in ("part",)}
        if other != base:
            raise JobError(f"part {m['options']['part']} was made with other options than part 0")
    cfg = JobConfig(**{**base, "part": None, "num_parts": n})
    failures = []
    for k in range(n):
        text = output.read_text(f"failures-p{k:04d}.jsonl") or ""
        failures += [json.loads(line) for line in text.splitlines() if line.strip()]
    skipped = [f for m in manifests for f in m.get("skipped", [])]
    num_ok = sum(m["num_ok"] for m in manifests)
    manifest = {
        **build_manifest(cfg, manifests[0]["classes"], [s for m in manifests for s in m["shards"]], [], failures,
                         skipped),
        "num_files_seen": num_ok + len(failures) + len(skipped),
        "num_inputs": num_ok + len(failures),
        "num_ok": num_ok,
        "total_input_seconds": round(sum(m["total_input_seconds"] for m in manifests), 3),
        "total_output_frames": sum(m["total_output_frames"] for m in manifests),
        "frame_sizes": _sum_counts(m["frame_sizes"] for m in manifests),
        "frame_rates": _sum_counts(m["frame_rates"] for m in manifests),
        "partly_decoded": sum(m["partly_decoded"] for m in manifests),
        "parts": n,
    }
    write_jsonl_atomic(output.local / "failures.jsonl", failures)
    write_json_atomic(output.local / "manifest.json", manifest)
    output.publish("failures.jsonl", "manifest.json")
    return manifest


def _sum_counts(dicts) -> dict[str, int]:
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return dict(total.most_common())
