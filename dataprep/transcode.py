"""One input video → re-encoded clips: decode, resample to a constant frame rate, resize, cut, encode.

Streaming: frames are resized and encoded as they are decoded, so memory does not grow with the
length of the video. Resampling picks, for each output time, the source frame nearest to it; output
and source times that coincide are half a frame from any decision boundary, so float seconds are
exact enough and resampling a video to its own rate keeps every frame exactly once.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

from dataprep.inputs import InputVideo
from salt.data.codecs import CodecSpec

REORDER_WINDOW = 8  # frames; some files emit a few frames out of presentation order
SCALER = "AREA"  # swscale's area averaging: no aliasing when shrinking


class TranscodeFailure(Exception):
    """The input cannot become a sample; `str(exc)` is the reason recorded in failures.jsonl."""


@dataclass(frozen=True)
class TranscodeOptions:
    codec: CodecSpec
    fps: Fraction | None  # None keeps the source rate
    short_side: int  # 0 keeps the source size (rounded down to even)
    clip_seconds: float | None  # None: one sample per video
    gop: int
    quality: int | None
    min_frames: int


@dataclass
class EncodedClip:
    clip_index: int
    start_frame: int  # in output frames from the video's first frame
    frames: int
    payload: bytes


@dataclass
class VideoResult:
    input: InputVideo
    width: int
    height: int
    fps: Fraction
    source_fps: Fraction
    source_frames_header: int
    source_frames_decoded: int
    source_seconds: float
    output_frames: int
    decode_error: str | None
    clips: list[EncodedClip] = field(default_factory=list)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Aspect kept, both sides even (4:2:0 chroma needs them)."""
    if short_side <= 0:
        return max(2, width // 2 * 2), max(2, height // 2 * 2)
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


@dataclass(frozen=True)
class Probe:
    """What opening a candidate input found, before any decoding."""

    input: InputVideo
    seconds: float | None  # container or stream duration; None when the header does not say
    failure: str | None  # why it cannot become a sample; None for a video


def _open(inp: InputVideo) -> av.container.InputContainer:
    try:
        size = os.path.getsize(inp.path)
    except OSError as e:
        raise TranscodeFailure(f"unreadable: {e.strerror or e}") from None
    if size == 0:
        raise TranscodeFailure("empty file")
    try:
        return av.open(inp.path, metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise TranscodeFailure(f"not a readable video: {e}") from None


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise TranscodeFailure("no video stream" + (f" (only {', '.join(kinds)})" if kinds else ""))
    return container.streams.video[0]


def probe_video(inp: InputVideo) -> Probe:
    """Opens the file and reads its headers: is there a video stream, and how long is it."""
    try:
        with _open(inp) as container:
            stream = _video_stream(container)
            if stream.duration is not None and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = None
            return Probe(inp, seconds if seconds is None or seconds >= 0 else None, None)
    except TranscodeFailure as e:
        return Probe(inp, None, str(e))
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the job; its reason is recorded
        return Probe(inp, None, f"internal error: {type(e).__name__}: {e}")


def transcode_video(inp: InputVideo, opts: TranscodeOptions, skip_clips: int = 0) -> VideoResult:
    """Raises TranscodeFailure for inputs that yield no sample. `skip_clips` > 0 decodes but does not
    encode the first clips (a resumed job already wrote them)."""
    with _open(inp) as container:
        stream = _video_stream(container)
        src_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not src_rate or src_rate <= 0:
            raise TranscodeFailure("no usable frame rate in the stream header")
        src_rate = Fraction(src_rate).limit_denominator(100000)
        fps = opts.fps or src_rate
        reader = _FrameReader(container, stream, src_rate)
        result = _encode_clips(inp, reader, opts, fps, src_rate, skip_clips)
        result.source_frames_header = int(stream.frames or 0)
        return result


class _FrameReader:
    """Decoded frames in presentation order with exact times; stops at the first decode error and
    remembers it, so a partly decodable file keeps what decodes."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, rate: Fraction):
        self.container, self.stream, self.rate = container, stream, rate
        self.decoded = 0
        self.error: str | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None

    def _raw(self) -> Iterator[tuple[float, av.VideoFrame]]:
        tb = float(self.stream.time_base) if self.stream.time_base else None
        step = 1.0 / float(self.rate)
        prev: float | None = None
        try:
            for frame in self.container.decode(self.stream):
                t = frame.pts * tb if (frame.pts is not None and tb) else None
                if t is None:
                    t = 0.0 if prev is None else prev + step
                prev = t
                self.decoded += 1
                yield t, frame
        except (av.error.FFmpegError, ValueError, OverflowError, MemoryError) as e:
            self.error = f"{type(e).__name__} after {self.decoded} frames: {e}"

    def frames(self) -> Iterator[tuple[float, av.VideoFrame]]:
        heap: list[tuple[float, int, av.VideoFrame]] = []
        counter = itertools.count()
        last: float | None = None

        def emit(item):
            nonlocal last
            t, _, frame = item
            if last is not None and t <= last:  # duplicate timestamp: keep the first
                return None
            last = t
            if self.first_time is None:
                self.first_time = t
            self.last_time = t
            return t, frame

        for t, frame in self._raw():
            heapq.heappush(heap, (t, next(counter), frame))
            if len(heap) > REORDER_WINDOW:
                out = emit(heapq.heappop(heap))
                if out:
                    yield out
        while heap:
            out = emit(heapq.heappop(heap))
            if out:
                yield out


def _resample(frames: Iterator[tuple[float, av.VideoFrame]], fps: Fraction,
              src_rate: Fraction) -> Iterator[av.VideoFrame]:
    """Constant-rate frames by nearest timestamp: output k (time t0 + k/fps) takes the source frame
    whose time is nearest; the last source frame lasts 1/src_rate."""
    k = 0
    period = 1.0 / float(fps)
    t0: float | None = None
    prev: tuple[float, av.VideoFrame] | None = None
    for t, frame in frames:
        if t0 is None:
            t0 = t
        if prev is not None:
            midpoint = (prev[0] + t) / 2
            while t0 + k * period < midpoint:
                yield prev[1]
                k += 1
        prev = (t, frame)
    if prev is not None:
        end = prev[0] + 0.5 / float(src_rate)
        while t0 + k * period < end:
            yield prev[1]
            k += 1


class _ClipEncoder:
    def __init__(self, codec: CodecSpec, fps: Fraction, width: int, height: int, gop: int,
                 quality: int | None):
        self.buf = io.BytesIO()
        # bitexact: no random segment UIDs or version strings, so equal inputs give equal bytes
        self.out = av.open(self.buf, "w", format=codec.container, options={"fflags": "+bitexact"})
        self.stream = self.out.add_stream(codec.encoder, rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = codec.pix_fmt
        self.stream.codec_context.gop_size = gop
        self.stream.codec_context.thread_count = 1  # byte-identical output whatever the machine
        self.stream.options = {**codec.encoder_options(gop, quality), "flags": "+bitexact"}
        self.time_base = Fraction(1) / fps
        self.pts = 0

    def add(self, frame: av.VideoFrame) -> None:
        frame.pts = self.pts
        frame.pict_type = av.video.frame.PictureType.NONE  # a source keyframe must not force one here
        frame.time_base = self.time_base
        self.pts += 1
        for packet in self.stream.encode(frame):
            self.out.mux(packet)

    def finish(self) -> bytes:
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()
        return self.buf.getvalue()


def _encode_clips(inp: InputVideo, reader: _FrameReader, opts: TranscodeOptions, fps: Fraction,
                  src_rate: Fraction, skip_clips: int) -> VideoResult:
    clip_len = round(opts.clip_seconds * fps) if opts.clip_seconds else None
    if clip_len is not None and clip_len < opts.min_frames:
        raise ValueError(f"--clip-seconds gives {clip_len} frames at {float(fps):.3f} fps, "
                         f"below --min-frames {opts.min_frames}")
    clips: list[EncodedClip] = []
    encoder: _ClipEncoder | None = None
    width = height = 0
    clip_index, in_clip, n_out = 0, 0, 0

    def close_clip() -> None:
        nonlocal encoder
        if encoder is not None and in_clip >= opts.min_frames:
            clips.append(EncodedClip(clip_index, n_out - in_clip, in_clip, encoder.finish()))
        elif encoder is not None:
            encoder.out.close()
        encoder = None

    last_src, last_scaled = None, None
    for frame in _resample(reader.frames(), fps, src_rate):
        if not width:
            width, height = output_size(frame.width, frame.height, opts.short_side)
        if clip_index >= skip_clips:
            if encoder is None:
                encoder = _ClipEncoder(opts.codec, fps, width, height, opts.gop, opts.quality)
            if frame is not last_src:  # a frame repeated by the resampler is scaled once
                last_src, last_scaled = frame, frame.reformat(width=width, height=height, format=opts.codec.pix_fmt,
                                                              interpolation=SCALER)
            encoder.add(last_scaled)
        in_clip += 1
        n_out += 1
        if clip_len is not None and in_clip == clip_len:
            close_clip()
            clip_index += 1
            in_clip = 0
    if in_clip:
        close_clip()

    if reader.decoded == 0:
        raise TranscodeFailure("no decodable frames" + (f": {reader.error}" if reader.error else ""))
    if n_out < opts.min_frames:
        raise TranscodeFailure(f"too short: {n_out} frames at {float(fps):.3f} fps < --min-frames {opts.min_frames}")
    seconds = reader.last_time - reader.first_time + 1 / float(src_rate)
    return VideoResult(input=inp, width=width, height=height, fps=fps, source_fps=src_rate,
                       source_frames_header=0, source_frames_decoded=reader.decoded,
                       source_seconds=seconds, output_frames=n_out, decode_error=reader.error, clips=clips)
