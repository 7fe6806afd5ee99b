"""Built-in synthetic video dataset: classes that only the order of frames tells apart.

    python -m dataprep.synth --out data/synth --videos 200 --seed 0 [--task directions4]

writes DIR/<class>/<id>.mp4 (H.264, yuv420p, single-threaded encoder so the bytes are reproducible),
DIR/labels.csv (path,label; path relative to DIR; rows sorted) and DIR/dataset.json (the task, its
classes, what each class becomes under a horizontal flip). Video i has class classes[i % len(classes)]
and is a pure function of (task, seed, i, size, frames, fps): the output does not depend on --workers,
and asking for more videos leaves the first ones unchanged. See synth_render for the tasks, the scenes
and why a single frame cannot give the label away.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from dataprep.synth_render import CLASSES, DEFAULT_TASK, PAIRS, TASKS, SynthVideo, get_task, render_scene
from salt.processes import mp_context

__all__ = [
    "CLASSES",
    "DEFAULT_TASK",
    "PAIRS",
    "TASKS",
    "class_of",
    "encode_h264",
    "render_sample",
    "render_video",
    "video_relpath",
    "write_dataset",
    "write_video",
]


def class_of(index: int, task: str = DEFAULT_TASK) -> str:
    """Classes cycle with the index, so any prefix of the dataset is as balanced as it can be."""
    classes = get_task(task).classes
    return classes[index % len(classes)]


def render_sample(index: int, seed: int, size: int = 64, frames: int = 64, task: str = DEFAULT_TASK) -> SynthVideo:
    """Video `index` of the dataset with ground truth about its target object."""
    return render_scene(class_of(index, task), (seed, index), size, frames, get_task(task))


def render_video(index: int, seed: int, size: int = 64, frames: int = 64,
                 task: str = DEFAULT_TASK) -> tuple[np.ndarray, str]:
    """Frames (T, H, W, 3) uint8 and class name of video `index`; pure function of its arguments."""
    sample = render_sample(index, seed, size, frames, task)
    return sample.frames, sample.label


def video_relpath(index: int, task: str = DEFAULT_TASK) -> str:
    return f"{class_of(index, task)}/{index:06d}.mp4"


def dataset_info(task: str) -> dict:
    """DIR/dataset.json: what the shard job records in manifest.json for loaders and probes."""
    t = get_task(task)
    return {"task": t.name, "classes": list(t.classes), "hflip_labels": t.hflip_labels, "purpose": t.purpose}


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 // 2, W) uint8 planar yuv420p, BT.601 limited range.

    Integer arithmetic, so the bytes do not depend on the FFmpeg build or the CPU's SIMD path.
    """
    h, w = frame.shape[:2]
    r, g, b = (frame[..., c].astype(np.int32) for c in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16

    def chroma(cr: int, cg: int, cb: int) -> np.ndarray:
        full = cr * r + cg * g + cb * b
        block = full.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))  # 2x2 average, rounded below
        return ((block + 512) >> 10) + 128

    u, v = chroma(-38, -74, 112), chroma(112, -94, -18)
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])  # PyAV's packed yuv420p layout
    return np.clip(planes, 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def encode_h264(frames: np.ndarray, fps: int) -> bytes:
    """MP4/H.264 bytes of RGB frames, byte-reproducible: our own YUV conversion, one encoder thread,
    explicit timestamps and no macroblock-tree rate control."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # mbtree off: with it on, x264 gave different bytes for the same input in a fresh process
        # (first encode) on these tiny frames, even single-threaded. Measured: 10 of 24 clips varied
        # across 12 processes with it on, none with it off.
        stream.options = {"crf": "18", "preset": "fast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        # Tag what rgb_to_yuv420p produced (BT.601 / SMPTE 170M, limited range) so no reader guesses.
        stream.codec_context.colorspace = 6  # AVCOL_SPC_SMPTE170M
        stream.codec_context.color_primaries = 6  # AVCOL_PRI_SMPTE170M
        stream.codec_context.color_trc = 6  # AVCOL_TRC_SMPTE170M
        stream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG
        for i, frame in enumerate(frames):
            yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            yuv.pts = i
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_video(out: Path, index: int, seed: int, size: int, frames: int, fps: int,
                task: str = DEFAULT_TASK) -> tuple[str, str]:
    """Render, encode and atomically write video `index`; returns its (relative path, label)."""
    video, label = render_video(index, seed, size, frames, task)
    rel = video_relpath(index, task)
    _write_atomic(Path(out) / rel, encode_h264(video, fps))
    return rel, label


def _write_video_job(args: tuple[Path, int, int, int, int, int, str]) -> tuple[str, str]:
    return write_video(*args)


def write_dataset(
    out: Path,
    videos: int,
    seed: int,
    size: int = 64,
    frames: int = 64,
    fps: int = 30,
    workers: int = 1,
    progress: bool = True,
    task: str = DEFAULT_TASK,
) -> Path:
    """Write `videos` videos and labels.csv under `out`; returns the labels.csv path."""
    get_task(task)
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if size < 8 or size % 2:
        raise ValueError(f"size must be even and >= 8 (H.264 4:2:0 needs even sizes), got {size}")
    if frames < 2 or fps < 1:
        raise ValueError(f"need frames >= 2 and fps >= 1, got frames={frames} fps={fps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, i, seed, size, frames, fps, task) for i in range(videos)]
    bar = tqdm(total=videos, desc="synth videos", unit="video", disable=not progress)
    rows: list[tuple[str, str]] = []
    if workers > 1:
        with mp_context().Pool(min(workers, videos)) as pool:
            for row in pool.imap_unordered(_write_video_job, jobs, chunksize=4):
                rows.append(row)
                bar.update()
    else:
        for job in jobs:
            rows.append(_write_video_job(job))
            bar.update()
    bar.close()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "label"))
    writer.writerows(sorted(rows))
    _write_atomic(out / "dataset.json", (json.dumps(dataset_info(task), indent=1) + "\n").encode())
    labels = out / "labels.csv"  # last: its presence marks a complete dataset
    _write_atomic(labels, text.getvalue().encode())
    return labels


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dataprep.synth",
        description="Write a synthetic SALT video dataset: H.264 MP4 files in DIR/<class>/<id>.mp4, "
        "DIR/labels.csv and DIR/dataset.json. Every class is the time reversal of another. Tasks: "
        + "; ".join(f"{t.name} ({len(t.classes)} classes: {t.purpose})" for t in TASKS.values()),
    )
    p.add_argument("--task", choices=sorted(TASKS), default=DEFAULT_TASK,
                   help=f"which classes and scenes (default {DEFAULT_TASK})")
    p.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    p.add_argument("--videos", type=int, required=True,
                   help="number of videos; video i has class i mod (number of classes), so classes stay balanced")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; video i is drawn from (seed, i) (default 0)")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels, even (default 64)")
    p.add_argument("--frames", type=int, default=64, help="frames per video (default 64)")
    p.add_argument("--fps", type=int, default=30, help="frame rate written into the files (default 30)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel processes; the output is identical for any value (default min(4, CPUs))")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    labels = write_dataset(args.out, args.videos, args.seed, args.size, args.frames, args.fps, args.workers,
                           task=args.task)
    print(f"wrote {args.videos} videos and {labels}")


if __name__ == "__main__":
    main()
