"""The DALI input pipeline: shard bytes → decode (NVDEC on a GPU, libavcodec on the CPU) → views → torch.

Samples reach DALI through `fn.external_source`, fed by `BatchPlanner` from the shards' DALI index
files, rather than through `fn.readers.webdataset`. Measured with DALI 2.4: `fn.decoders.video` does
not support pipeline checkpointing, so a reader inside the pipeline cannot be restored mid-epoch;
and a payload that fails to decode invalidates the whole pipeline without saying which sample it
was. Feeding from Python keeps DALI doing the heavy work (decoding; on a GPU also crop, resize and
flip) and gives exact resume, equal batch counts on every rank, keys with every batch, and the
culprit of a decode error. On the CPU the views are cut in torch (salt.data.augment: faster there
than DALI's CPU resize). `benchmarks/loader.py` measures both feeds and both ways on the same data.

The bytes DALI decodes are read ahead by a thread of the loader (`ReadAhead`): planning a batch, reading
its samples (a shard's first read in a process also hashes it, a remote shard set makes range requests)
never happen on the thread that calls `pipeline.run()`, which is the training thread.

When every sample probed after a pipeline failure fails for one reason, the machine is at fault, not the
data (no libnvcuvid.so in a container without the video driver capability, a codec profile NVDEC does
not decode, DALI out of GPU memory): the loader stops with one LoaderError naming the cause and the fix,
rather than marking sample after sample bad.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from salt.data.augment import cut_view, one_torch_thread
from salt.data.batch import VideoBatch
from salt.data.config import LoaderConfig
from salt.data.dali_copy import DaliToTorch
from salt.data.loader_base import VideoLoaderBase
from salt.data.plan import (
    BatchPlan,
    BatchPlanner,
    CorruptSampleError,
    LoaderError,
    RemoteReadError,
    SamplePlan,
)
from salt.data.shardset import ShardSet
from salt.data.storage import StorageError
from salt.devices import dali_device
from salt.masks import MaskGenerator


def resolve_device(device: str, training: torch.device | None = None) -> str:
    """data.device for batches used on `training`: auto decodes on the GPU the batches go to, and on the
    CPU when they go to the CPU (DS_ACCELERATOR=cpu on a GPU machine included)."""
    if device == "auto":
        return dali_device(training)[0]
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
    if device == "gpu" and gpu_decode and not codec.dali_gpu:
        fallback = " data.gpu_decode=false decodes it on the CPU and cuts the views on the GPU." if codec.dali_cpu \
            else ""
        raise LoaderError(f"shard set {shards.root} holds {codec.name} video, which salt does not decode with NVDEC "
                          f"(H.264, HEVC and VP9 are verified on Hopper; {codec.name} is not).{fallback}")


class BatchFeeder:
    """DALI's external source: each call returns the next batch's bytes, each decode's start frame and
    (with_views) each view's crop box and flip. The batches are planned and read by `ReadAhead`'s thread;
    those handed to DALI but not yet returned stay in `in_flight`."""

    def __init__(self, planner: BatchPlanner, positions: Iterator[tuple[int, int]], decodes: int,
                 views_per_decode: int, with_views: bool, depth: int = 2):
        self.decodes, self.views_per_decode, self.with_views = decodes, views_per_decode, with_views
        self.in_flight: deque[BatchPlan] = deque()
        self.ahead = ReadAhead(planner, positions, depth)

    def __call__(self) -> tuple[list[np.ndarray], ...]:
        plan, payloads = self.ahead.next()
        self.in_flight.append(plan)
        out: list[list[np.ndarray]] = [[np.frombuffer(b, dtype=np.uint8) for b in payloads]]
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

    def close(self) -> None:
        self.ahead.close()


class ReadAhead:
    """Plans and reads the next `depth` batches in one background thread, in order: the caller's thread
    only takes finished (plan, bytes) pairs. One thread keeps the planner's cached epoch order unshared.
    depth 0 reads on the caller's thread (the stage profile times the read on its own)."""

    def __init__(self, planner: BatchPlanner, positions: Iterator[tuple[int, int]], depth: int):
        self.planner, self.positions, self.depth = planner, positions, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salt-read-ahead") if depth else None
        self._queue: deque[Future] = deque()
        self._lock = threading.Lock()
        self.failed: RemoteReadError | None = None  # a read that ran out of retries (DALI may wrap it)

    def _read(self, epoch: int, index: int) -> tuple[BatchPlan, list[bytes]]:
        try:
            plan = self.planner.plan(epoch, index)  # reads each sample's metadata
            return plan, [self.planner.shards.video_bytes(s.index) for s in plan.samples]
        except StorageError as e:  # the server stayed unreachable past the retry budget: not a bad sample
            raise RemoteReadError(str(e)) from None

    def _fill(self) -> None:
        while len(self._queue) < self.depth:
            epoch, index = next(self.positions)
            self._queue.append(self._pool.submit(self._read, epoch, index))

    def next(self) -> tuple[BatchPlan, list[bytes]]:
        try:
            if self._pool is None:
                return self._read(*next(self.positions))
            with self._lock:
                self._fill()
                fut = self._queue.popleft()
                self._fill()
            return fut.result()
        except RemoteReadError as e:
            self.failed = e
            raise

    def close(self) -> None:
        """Drops the batches read ahead and waits for the one being read (nothing runs on afterwards)."""
        with self._lock:
            for f in self._queue:
                f.cancel()
            self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


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
                 mask_generator: MaskGenerator | None = None, training_device: torch.device | None = None,
                 only_shards: Sequence[int] | None = None):
        """training_device: where the batches are used; DALI then runs on that GPU (its index, not the
        current device's) and copies onto it."""
        device = resolve_device(cfg.device, training_device)
        super().__init__(cfg, rank, world, mask_generator, only_shards,
                         pin_memory=training_device is not None and training_device.type == "cuda")
        self.device = device
        check_codec(self.shards, self.device, cfg.gpu_decode)
        self.device_id = None
        if self.device == "gpu":
            self.device_id = dali_device(training_device)[1]
        self._copy = DaliToTorch(torch.device("cuda", self.device_id) if self.device == "gpu" else torch.device("cpu"))
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
                                   self.decodes, self.views_per_decode, self.views_in_dali,
                                   depth=self.cfg.prefetch + 2)
        self._pipe = build_pipeline(self.cfg, self.device, self._feeder, self.cfg.batch_size, self.decodes,
                                    self.views_per_decode, self.device_id, self.views_in_dali)
        self._pipe.build()

    def _stop(self) -> None:
        super()._stop()
        if self._feeder is not None:
            self._feeder.close()
        self._copy.before_run()
        self._pipe, self._feeder = None, None

    def _next(self) -> VideoBatch:
        if self._pipe is None:
            self._start()
        while True:
            try:
                self._copy.before_run()  # DALI reuses the last outputs' buffers from here
                outputs = self._pipe.run()
                break
            except RemoteReadError:
                self._stop()
                raise
            except RuntimeError as e:
                failed = self._feeder.ahead.failed if self._feeder else None
                if failed is not None:  # the shard set's server, not a sample: no sample is marked bad
                    self._stop()
                    raise RemoteReadError(str(failed)) from None
                self._recover(e)
                self._start()
        plan = self._feeder.in_flight.popleft()
        if self.views_in_dali:
            video = self._copy.copy(outputs, torch.float32 if self.cfg.handoff == "float32" else torch.uint8)
        else:
            video = views_from_frames(outputs, plan, self.views_per_decode, self.cfg)
            if self.pin_memory:
                video = video.pin_memory()
        return self._assemble(plan, video)

    def _recover(self, error: RuntimeError) -> None:
        """A decode failed somewhere in the batches in flight: find the samples DALI cannot decode and
        skip them from now on (or raise under strict mode). When every sample probed fails for one
        reason, the machine is at fault: LoaderError naming the cause and the fix."""
        candidates = {s.index: s for plan in (self._feeder.in_flight if self._feeder else []) for s in plan.samples}
        self._stop()  # the read-ahead thread is done before the probes read
        probed = [(s, self._decode_error(s)) for i, s in sorted(candidates.items()) if i not in self.planner.bad]
        bad = [(s, why) for s, why in probed if why is not None]
        if not bad:
            raise LoaderError(f"the DALI pipeline failed, and no sample in flight fails on its own: "
                              f"{_last_line(error)}") from error
        if len(probed) >= 2 and len(bad) == len(probed) and len({why for _, why in bad}) == 1:
            raise LoaderError(machine_fault_message(bad[0][1], len(bad), self.device, self.cfg.gpu_decode)) from None
        if self.cfg.strict:
            s, why = bad[0]
            raise CorruptSampleError.for_sample(self.shards.shard_of(s.index), s.key, why) from None
        for s, why in bad:
            self._mark_bad(s.index, why)

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


FAULT_HINTS = (  # (what the cause says, lower case) -> what to do
    (("libnvcuvid", "nvcuvid", "cuvid"), "the NVIDIA video decoder library (libnvcuvid.so) is missing: in a "
     "container, NVIDIA_DRIVER_CAPABILITIES must include 'video' (e.g. compute,utility,video); or decode on the "
     "CPU with data.gpu_decode=false (VP9 shards)"),
    (("out of memory", "memory allocation", "cudaerrormemoryallocation", "bad_alloc"), "DALI ran out of GPU "
     "memory (torch holds most of it): lower data.prefetch or data.batch_size, or decode on the CPU with "
     "data.gpu_decode=false"),
    (("not supported", "unsupported", "codec"), "this GPU's decoder does not decode the shards' codec or profile: "
     "decode on the CPU with data.gpu_decode=false (VP9 shards), or rebuild the shards with "
     "`python -m dataprep.shards --codec h264`"),
)


def machine_fault_message(cause: str, samples: int, device: str, gpu_decode: bool) -> str:
    """One line for a fault of the machine: every one of `samples` samples failed with `cause`."""
    lower = cause.lower()
    hint = next((h for keys, h in FAULT_HINTS if any(k in lower for k in keys)), None)
    if hint is None:
        hint = ("decode on the CPU with data.gpu_decode=false, or read with the reference loader "
                "(data.loader=reference)") if device == "gpu" and gpu_decode else \
            "check the shard set with `python -m dataprep.shards --verify DIR`, or read it with data.loader=reference"
    where = "NVDEC on the GPU" if device == "gpu" and gpu_decode else f"DALI on the {device.upper()}"
    return (f"every one of the {samples} samples probed fails to decode with {where}, for one reason: {cause}. "
            f"That is the machine (or the whole shard set), not single bad samples: {hint}")


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
