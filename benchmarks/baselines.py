"""The loaders a user would pick instead of salt's, for `benchmarks/loader.py` to run side by side.

- `vjepa-decord`: V-JEPA 2's way. Each sample opens its *original* source video with decord
  (`VideoReader`, `get_batch`), reads 16 frames at a stride from a random start, and augments in
  torch in DataLoader workers.
- `vjepa-torchcodec`: the same with torchcodec's `VideoDecoder` (`seek_mode="approximate"`,
  `num_ffmpeg_threads` set, `get_frames_at`), the decoder V-JEPA 2's users moved to.
- `shards-torchcodec`: a DataLoader over salt's shards, torchcodec decoding each sample's bytes.

The source loaders read the same seconds of video as the training clip: their stride is the shard
stride scaled by source fps / shard fps. Augmentation is V-JEPA's: frames to float, crop, resize
(bilinear, antialiased), flip and normalise in the worker; the crop boxes, flips and start frames
come from salt's view recipe, so the work per clip is the same as salt's.
"""

from __future__ import annotations

import functools
import io
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from salt.data.shardset import ShardSet
from salt.data.views import ViewParams, ViewRecipe, frame_indices, train_view
from salt.processes import mp_context

BASELINES = ("vjepa-decord", "vjepa-torchcodec", "shards-torchcodec")
FFMPEG_LIBS = "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"


@functools.cache
def _probe_video() -> bytes:
    """Two 16x16 frames of MPEG-4 in MP4, made with PyAV: what a decoder must open to be usable here."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


@functools.cache
def unavailable(name: str) -> str | None:
    """Why baseline `name` cannot run on this machine, in one line (None: it can). torchcodec loads FFmpeg's
    shared libraries only when its first decoder opens, so a decoder opens a tiny video here."""
    backend = name.split("-", 1)[1]
    try:
        if backend == "decord":
            import decord  # noqa: F401
        else:
            from torchcodec.decoders import VideoDecoder

            VideoDecoder(_probe_video())
    except ImportError:
        return f"{backend} is not installed (pip install -e '.[bench]'; make venv installs it)"
    except (RuntimeError, OSError) as e:
        if backend == "torchcodec":
            return ("torchcodec cannot load FFmpeg's shared libraries (it needs a system FFmpeg 4 to 7): install "
                    f"them, e.g. on Debian `.ci/ffmpeg-libs.sh` (as root) or `apt-get install {FFMPEG_LIBS}`")
        return f"{backend} does not work here: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return None


def float_augment(frames: torch.Tensor, view: ViewParams, crop_size: int, mean: tuple[float, float, float],
                  std: tuple[float, float, float]) -> torch.Tensor:
    """(T, H, W, 3) uint8 → float, crop, resize (bilinear, antialiased), flip, normalise → (3, T, S, S)."""
    x = frames.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = x[:, :, view.top:view.top + view.height, view.left:view.left + view.width]
    x = F.interpolate(x, size=(crop_size, crop_size), mode="bilinear", antialias=True, align_corners=False)
    if view.flip:
        x = x.flip(-1)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    return ((x - m) / s).permute(1, 0, 2, 3).contiguous()  # (3, T, S, S)


def source_stride(source_fps: float, shard_fps: float, shard_stride: int) -> int:
    """The stride that covers, at the source's rate, the seconds a shard clip covers."""
    return max(1, round(source_fps / shard_fps * shard_stride))



class _Decoder:
    """One opened video: `len()` frames, `frames(indices)` → (T, H, W, 3) uint8."""

    def __init__(self, backend: str, source: str | bytes, ffmpeg_threads: int):
        self.backend = backend
        if backend == "decord":
            import decord

            self.reader = decord.VideoReader(source, num_threads=ffmpeg_threads)
            self.count = len(self.reader)
        elif backend == "torchcodec":
            from torchcodec.decoders import VideoDecoder

            self.reader = VideoDecoder(source, seek_mode="approximate", num_ffmpeg_threads=ffmpeg_threads,
                                       dimension_order="NHWC")
            self.count = len(self.reader)
        else:
            raise ValueError(f"unknown decoder backend {backend!r}")

    def frames(self, indices: list[int]) -> torch.Tensor:
        if self.backend == "decord":
            return torch.from_numpy(self.reader.get_batch(indices).asnumpy())
        return self.reader.get_frames_at(indices).data


class SourceVideoDataset(Dataset):
    """One sample per source path: open the whole original video, read one training clip from it.
    `repeat` lists the paths that many times over: a benchmark's small set then has no epoch ends, at
    which a DataLoader's workers wait for the last batch (salt's loader runs on across epochs)."""

    def __init__(self, paths: list[str], strides: list[int], recipe: ViewRecipe, backend: str,
                 mean: tuple[float, float, float], std: tuple[float, float, float], ffmpeg_threads: int = 1,
                 seed: int = 0, repeat: int = 1):
        self.paths, self.strides, self.backend = paths, strides, backend
        self.mean, self.std, self.ffmpeg_threads, self.repeat = mean, std, ffmpeg_threads, repeat
        self.recipe = replace(recipe, seed=seed)

    def __len__(self) -> int:
        return len(self.paths) * self.repeat

    def __getitem__(self, i: int) -> torch.Tensor:
        i %= len(self.paths)
        dec = _Decoder(self.backend, self.paths[i], self.ffmpeg_threads)
        recipe, key = replace(self.recipe, frame_stride=self.strides[i]), f"{self.paths[i]}#{i}"
        start = train_view(recipe, key, 0, dec.count, 1, 1).start_frame  # the start does not depend on the size
        frames = dec.frames(frame_indices(recipe, start, dec.count))  # (T, H, W, 3)
        view = train_view(recipe, key, 0, dec.count, frames.shape[1], frames.shape[2])
        return float_augment(frames, view, recipe.crop_size, self.mean, self.std)


class ShardSampleDataset(Dataset):
    """One sample per shard sample: torchcodec decodes the sample's bytes from the tar."""

    def __init__(self, shards_dir: str, recipe: ViewRecipe, mean: tuple[float, float, float],
                 std: tuple[float, float, float], ffmpeg_threads: int = 1, seed: int = 0, repeat: int = 1):
        self.shards = ShardSet(shards_dir, verify=False)
        self.recipe, self.mean, self.std, self.ffmpeg_threads = replace(recipe, seed=seed), mean, std, ffmpeg_threads
        self.repeat = repeat

    def __len__(self) -> int:
        return len(self.shards) * self.repeat

    def __getitem__(self, i: int) -> torch.Tensor:
        i %= len(self.shards)
        meta = self.shards.meta(i)
        dec = _Decoder("torchcodec", self.shards.video_bytes(i), self.ffmpeg_threads)
        view = train_view(self.recipe, meta["key"], 0, dec.count, meta["height"], meta["width"])
        frames = dec.frames(frame_indices(self.recipe, view.start_frame, dec.count))  # (T, H, W, 3)
        return float_augment(frames, view, self.recipe.crop_size, self.mean, self.std)


def baseline_loader(name: str, recipe: ViewRecipe, batch_size: int, workers: int, mean, std, *,
                    sources: list[str] | None = None, source_strides: list[int] | None = None,
                    shards_dir: str | None = None, seed: int = 0, repeat: int = 1) -> DataLoader:
    """A DataLoader of (B, 3, T, S, S) float batches for one of BASELINES; each worker decodes with one
    FFmpeg thread (workers = cores, as V-JEPA 2 runs them). repeat: see SourceVideoDataset."""
    if name in ("vjepa-decord", "vjepa-torchcodec"):
        ds: Dataset = SourceVideoDataset(sources or [], source_strides or [], recipe, name.split("-")[1], mean, std,
                                         seed=seed, repeat=repeat)
    elif name == "shards-torchcodec":
        ds = ShardSampleDataset(shards_dir or "", recipe, mean, std, seed=seed, repeat=repeat)
    else:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, generator=g,
                      persistent_workers=workers > 0, multiprocessing_context=mp_context() if workers else None)
