"""The DALI input pipeline: shard bytes → decode (NVDEC on a GPU, libavcodec on the CPU) → views → torch.

Samples reach DALI through `fn.external_source`, fed by `BatchPlanner` from the shards' DALI index
files, rather than through `fn.readers.webdataset`. Measured with DALI 2.4: `fn.decoders.video` does
not support pipeline checkpointing, so a reader inside the pipeline cannot be restored mid-epoch;
and a payload that fails to decode invalidates the whole pipeline without saying which sample it
was. Feeding from Python keeps DALI doing the heavy work (decoding; on a GPU also crop, resize and
flip) and gives exact resume, equal batch counts on every rank, keys with every batch, and the
culprit of a decode error. On the CPU the views are cut in torch (salt.data.augment: faster there
than DALI's CPU resize). `benchmarks/loader.py` measures both feeds and both ways on the same data.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from salt.data.augment import cut_view, one_torch_thread
from salt.data.batch import VideoBatch
from salt.data.config import LoaderConfig
from salt.data.loader_base import VideoLoaderBase
from salt.data.plan import BatchPlan, BatchPlanner, CorruptSampleError, LoaderError, SamplePlan
from salt.data.shardset import ShardSet
from salt.masks import MaskGenerator


def resolve_device(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "gpu" and not torch.cuda.is_available():
        raise LoaderError("data.device=gpu but no CUDA device is visible")
    return device


def check_codec(shards: ShardSet, device: str, gpu_decode: bool = True) -> None:
    """Fail before the first batch, with what to do, when DALI cannot decode the shards here."""
    codec = shards.codec
    if device == "gpu" and not gpu_decode and not codec.dali_cpu:
        raise LoaderError(f"shard set {shards.root} holds {codec.name} video, which DALI decodes only with NVDEC; "
                          f"data.gpu_decode=false decodes on the CPU. Set data.gpu_decode=true.")
    if device == "cpu" and not codec.dali_cpu:
        raise LoaderError(
            f"shard set {shards.root} holds {codec.name} video, which DALI decodes only on a GPU (NVDEC); "
            f"this loader runs on the CPU. Use the reference loader (data loader 'reference', PyAV reads "
            f"every codec), or rebuild the shards with `python -m dataprep.shards --codec vp9`.")
    if device == "gpu" and not codec.dali_gpu:
        raise LoaderError(f"shard set {shards.root} holds {codec.name} video, which DALI cannot decode")


class BatchFeeder:
    """DALI's external source: each call plans the next batch and returns its bytes, each decode's start
    frame and (with_views) each view's crop box and flip. Batches handed to DALI but not yet returned
    stay in `in_flight`."""

    def __init__(self, planner: BatchPlanner, positions: Iterator[tuple[int, int]], decodes: int,
                 views_per_decode: int, with_views: bool):
        self.planner, self.positions = planner, positions
        self.decodes, self.views_per_decode, self.with_views = decodes, views_per_decode, with_views
        self.in_flight: deque[BatchPlan] = deque()

    def __call__(self) -> tuple[list[np.ndarray], ...]:
        epoch, index = next(self.positions)
        plan = self.planner.plan(epoch, index)
        self.in_flight.append(plan)
        shards = self.planner.shards
        out: list[list[np.ndarray]] = [[np.frombuffer(shards.video_bytes(s.index), dtype=np.uint8)
                                        for s in plan.samples]]
        for g in range(self.decodes):
            out.append([np.array(s.views[g * self.views_per_decode][1].start_frame, dtype=np.int32)
                        for s in plan.samples])
            if not self.with_views:
                continue
            for v in range(g * self.views_per_decode, (g + 1) * self.views_per_decode):
                out.append([np.array([s.views[v][1].top, s.views[v][1].left], dtype=np.float32)
                            for s in plan.samples])
                out.append([np.array([s.views[v][1].top + s.views[v][1].height,
                                      s.views[v][1].left + s.views[v][1].width], dtype=np.float32)
                            for s in plan.samples])
                out.append([np.array(int(s.views[v][1].flip), dtype=np.int32) for s in plan.samples])
        return tuple(out)


def build_pipeline(cfg: LoaderConfig, device: str, source, batch_size: int, decodes: int, views_per_decode: int,
                   device_id: int | None, with_views: bool):
    """with_views: the pipeline crops, resizes, flips (and under handoff float32 normalises) each view
    and returns V outputs of (B, C, T, S, S) float32 or (B, T, S, S, C) uint8; otherwise it returns
    the decoded frames, one output of (B, T, H, W, 3) uint8 per decode, for the loader to cut."""
    from nvidia.dali import fn, pipeline_def, types

    decoder = "mixed" if device == "gpu" and cfg.gpu_decode else "cpu"
    as_float = cfg.handoff == "float32"

    @pipeline_def(batch_size=batch_size, num_threads=cfg.threads, device_id=device_id,
                  prefetch_queue_depth=cfg.prefetch, seed=cfg.seed & 0x7FFFFFFF)
    def pipe():
        per_view = [types.FLOAT, types.FLOAT, types.INT32] if with_views else []
        dtypes = [types.UINT8] + [types.INT32, *(per_view * views_per_decode)] * decodes
        inputs = fn.external_source(source=source, num_outputs=len(dtypes), batch=True, dtype=dtypes,
                                    no_copy=False)
        encoded, rest = inputs[0], inputs[1:]
        outputs = []
        per_decode = 1 + len(per_view) * views_per_decode
        for g in range(decodes):
            start = rest[g * per_decode]
            frames = fn.decoders.video(encoded, device=decoder, start_frame=start, sequence_length=cfg.num_frames,
                                       stride=cfg.frame_stride, pad_mode="edge")  # (T, H, W, 3) per sample
            if not with_views:
                outputs.append(frames)
                continue
            if device == "gpu" and decoder == "cpu":
                frames = frames.gpu()  # CPU-decoded frames: crop and resize on the GPU
            for v in range(views_per_decode):
                roi_start, roi_end, flip = rest[g * per_decode + 1 + 3 * v: g * per_decode + 4 + 3 * v]
                x = fn.resize(frames, roi_start=roi_start, roi_end=roi_end, roi_relative=False,
                              size=[cfg.crop_size, cfg.crop_size], interp_type=types.INTERP_LINEAR, antialias=True)
                if as_float:
                    x = fn.crop_mirror_normalize(x, mirror=flip, mean=[m * 255 for m in cfg.mean],
                                                 std=[s * 255 for s in cfg.std], output_layout="CFHW",
                                                 dtype=types.FLOAT)
                else:  # the uint8 hand-off keeps channels last: PixelNorm reorders on the device
                    x = fn.flip(x, horizontal=flip)
                outputs.append(x)  # (C, T, S, S) float32, or (T, S, S, C) uint8, per sample
        return tuple(outputs)

    return pipe()


def _to_torch(outputs, device: str, dtype: torch.dtype) -> torch.Tensor:
    """V outputs of (B, ...) each → one (V * B, ...) tensor, view-major, copied straight from DALI's
    buffers into slices of the result."""
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dense = [o.as_tensor() for o in outputs]
    b, *rest = dense[0].shape()
    target = torch.empty((len(dense) * b, *rest), dtype=dtype,
                         device=torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else "cpu")
    stream = torch.cuda.current_stream() if device == "gpu" else None
    for v, d in enumerate(dense):
        feed_ndarray(d, target[v * b:(v + 1) * b], cuda_stream=stream)
    return target


def views_from_frames(outputs, plan: BatchPlan, views_per_decode: int, cfg: LoaderConfig) -> torch.Tensor:
    """Decoded frames (one TensorList of (T, H, W, 3) uint8 per decode) → (V * B, T, S, S, 3) uint8,
    view-major, each view cut by `cut_view` straight from DALI's output buffers."""
    b, s = len(plan.samples), cfg.crop_size
    video = torch.empty((len(outputs) * views_per_decode * b, cfg.num_frames, s, s, 3), dtype=torch.uint8)
    with one_torch_thread():
        for g, frames in enumerate(outputs):
            for i, sample in enumerate(plan.samples):
                clip = torch.from_numpy(np.asarray(frames[i]))  # (T, H, W, 3), DALI's buffer until the next run
                for v in range(g * views_per_decode, (g + 1) * views_per_decode):
                    cut_view(clip, sample.views[v][1], s, video[v * b + i])
    return video


class DaliVideoLoader(VideoLoaderBase):
    """DALI decoding and augmentation; see the module docstring for why samples come from Python."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world: int = 1,
                 mask_generator: MaskGenerator | None = None, device_id: int | None = None,
                 only_shards: Sequence[int] | None = None):
        super().__init__(cfg, rank, world, mask_generator, only_shards)
        self.device = resolve_device(cfg.device)
        check_codec(self.shards, self.device, cfg.gpu_decode)
        self.device_id = None
        if self.device == "gpu":
            self.device_id = device_id if device_id is not None else torch.cuda.current_device()
        self.decodes, self.views_per_decode = cfg.view_layout()
        self.views_in_dali = cfg.views_in_dali(self.device)
        if self.device == "gpu" and not self.views_in_dali:
            raise LoaderError("data.cut_views=torch needs the CPU: on a GPU (data.device=auto found one) the "
                              "decoded frames stay on the GPU and DALI cuts the views; use cut_views=auto")
        self._pipe = None
        self._feeder: BatchFeeder | None = None

    def _start(self) -> None:
        self._stop()
        self._feeder = BatchFeeder(self.planner, self.planner.positions(self.epoch, self.next_index),
                               self.decodes, self.views_per_decode, self.views_in_dali)
        self._pipe = build_pipeline(self.cfg, self.device, self._feeder, self.cfg.batch_size, self.decodes,
                                    self.views_per_decode, self.device_id, self.views_in_dali)
        self._pipe.build()

    def _stop(self) -> None:
        super()._stop()
        self._pipe, self._feeder = None, None

    def _next(self) -> VideoBatch:
        if self._pipe is None:
            self._start()
        while True:
            try:
                outputs = self._pipe.run()
                break
            except RuntimeError as e:
                self._recover(e)
                self._start()
        plan = self._feeder.in_flight.popleft()
        if self.views_in_dali:
            video = _to_torch(outputs, self.device, torch.float32 if self.cfg.handoff == "float32" else torch.uint8)
        else:
            video = views_from_frames(outputs, plan, self.views_per_decode, self.cfg)
        return self._assemble(plan, video)

    def _recover(self, error: RuntimeError) -> None:
        """A decode failed somewhere in the batches in flight: find the samples DALI cannot decode and
        skip them from now on (or raise under strict mode)."""
        candidates = {s.index: s for plan in (self._feeder.in_flight if self._feeder else []) for s in plan.samples}
        failures = ((s, self._decode_error(s)) for i, s in sorted(candidates.items()) if i not in self.planner.bad)
        bad = [(s, why) for s, why in failures if why is not None]
        self._stop()
        if not bad:
            raise LoaderError(f"the DALI pipeline failed, and no sample in flight fails on its own: "
                              f"{_last_line(error)}") from error
        if self.cfg.strict:
            s, why = bad[0]
            raise CorruptSampleError.for_sample(self.shards.shard_of(s.index), s.key, why) from None
        for s, _ in bad:
            self._mark_bad(s.index)

    def _decode_error(self, sample: SamplePlan) -> str | None:
        """Why this one sample does not decode in DALI with its planned frames (None: it decodes)."""
        from nvidia.dali import fn, pipeline_def, types

        data = np.frombuffer(self.shards.video_bytes(sample.index), dtype=np.uint8)
        starts = sorted({p.start_frame for _, p in sample.views})
        decoder = "mixed" if self.device == "gpu" and self.cfg.gpu_decode else "cpu"

        @pipeline_def(batch_size=1, num_threads=1, device_id=self.device_id, prefetch_queue_depth=1)
        def probe():
            enc = fn.external_source(source=lambda: [data], batch=True, dtype=types.UINT8)
            return tuple(fn.decoders.video(enc, device=decoder, start_frame=s, sequence_length=self.cfg.num_frames,
                                           stride=self.cfg.frame_stride, pad_mode="edge") for s in starts)

        try:
            p = probe()
            p.build()
            p.run()
            return None
        except RuntimeError as e:
            return _cause(e)


def _cause(error: BaseException) -> str:
    """The line of a DALI error that says what went wrong: the one after "encountered:", without its assert
    ('Assert on "frames_decoders_[s]->IsValid()" failed: Failed to create video decoder for "memory file"')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        return re.sub(r'^Assert on ".*?" failed:\s*', "", lines[lines.index("encountered:") + 1])
    return _last_line(error)


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
