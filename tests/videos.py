"""Small video files for tests: real ones from ../shared/videos, generated ones, and broken ones."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"
REAL_VIDEOS = ("Megamind.avi", "Megamind_bugy.avi", "box.mp4", "cup.mp4", "tree.avi", "vtest.avi")


def write_video(path: Path, frames: int = 24, size: tuple[int, int] = (64, 48), fps: int = 24,
                codec: str = "libx264", seed: int = 0) -> Path:
    """A moving gradient with noise, so frames differ and encoders do real work."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=Fraction(fps))
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.thread_count = 1
        base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        for t in range(frames):
            img = np.roll(base, shift=2 * t, axis=1)
            img[: h // 4, :, 0] = (t * 9) % 255
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    rate = 16000
    with av.open(str(path), "w") as out:
        st = out.add_stream("aac", rate=rate)
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def write_bad_files(folder: Path, good_source: Path) -> dict[str, Path]:
    """Empty, truncated, bit-flipped, text and audio-only files, named by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good_source.read_bytes()
    bad = {
        "empty": folder / "empty.mp4",
        "truncated": folder / "truncated.mp4",
        "bitflip": folder / "bitflip.mp4",
        "text": folder / "text.mp4",
        "audio_only": folder / "audio_only.mp4",
    }
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(data[: len(data) // 5])
    flipped = bytearray(data)
    rng = np.random.default_rng(0)
    for i in rng.integers(len(data) // 10, len(data), size=len(data) // 50):
        flipped[i] ^= 0xFF
    bad["bitflip"].write_bytes(bytes(flipped))
    bad["text"].write_text("this is not a video\n" * 50)
    write_audio_only(bad["audio_only"])
    return bad


def copy_real_videos(folder: Path, names: tuple[str, ...] = REAL_VIDEOS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(SHARED_VIDEOS / n, folder / n)) for n in names]


def zero_sample_video(shards: Path, index: int) -> tuple[str, str]:
    """Overwrites sample `index`'s video bytes with zeros in place (the tar stays a valid tar) and records
    the shard's new sha256 in manifest.json: a sample that does not decode inside an intact shard.
    Returns (key, shard file name)."""
    import json

    from salt.atomic import file_sha256
    from salt.data.shardset import ShardSet

    s = ShardSet(shards, verify=False)
    ref = s.ref(index)
    s.close()
    with open(shards / ref.shard, "r+b") as f:
        f.seek(ref.video[0])
        f.write(b"\0" * ref.video[1])
    manifest = json.loads((shards / "manifest.json").read_text())
    for info in manifest["shards"]:
        if info["path"] == ref.shard:
            info["sha256"] = file_sha256(shards / ref.shard)
    (shards / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return ref.key, ref.shard
