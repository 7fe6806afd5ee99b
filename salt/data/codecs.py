"""Output codecs for shard preparation: encoder settings and which decoder can read each one.

DALI 2.x decodes VP8, VP9 and MJPEG on the CPU and H.264/HEVC only with NVDEC on a GPU, so VP9
is the default: a VP9 shard set trains on any machine, with or without a GPU. On a GPU, MJPEG is decoded
on the CPU (data.gpu_decode=false) and its views cut on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodecSpec:
    name: str  # what users type: --codec NAME
    encoder: str  # PyAV / FFmpeg encoder
    container: str  # FFmpeg muxer
    ext: str  # sample component extension inside the tar
    pix_fmt: str
    dali_cpu: bool  # DALI's CPU video decoder can read it
    dali_gpu: bool  # DALI's mixed (NVDEC) video decoder reads it (verified on Hopper: H.264, HEVC, VP9)

    def encoder_options(self, gop: int, quality: int | None) -> dict[str, str]:
        """Closed GOP of exactly `gop` frames, no scene-cut keyframes, no hidden/reordered frames
        that would make frame counts differ between decoders. x264/x265 without macroblock-tree
        rate control: with it, the same input can encode to other bytes in a fresh process."""
        common = {"g": str(gop), "keyint_min": str(gop)}
        if self.name == "vp9":
            return {**common, "deadline": "realtime", "cpu-used": "8", "crf": str(quality or 32), "b": "0",
                    "lag-in-frames": "0", "auto-alt-ref": "0", "row-mt": "0"}
        if self.name == "h264":
            return {**common, "preset": "veryfast", "crf": str(quality or 23),
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:mbtree=0"}
        if self.name == "hevc":
            return {**common, "preset": "veryfast", "crf": str(quality or 28),
                    "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:cutree=0:log-level=error"}
        if self.name == "mjpeg":  # every frame is a keyframe; gop does not apply
            return {"q:v": str(quality or 4)}
        raise ValueError(f"no encoder options for codec {self.name!r}")


CODECS: dict[str, CodecSpec] = {
    "vp9": CodecSpec("vp9", "libvpx-vp9", "webm", "webm", "yuv420p", dali_cpu=True, dali_gpu=True),
    "h264": CodecSpec("h264", "libx264", "mp4", "mp4", "yuv420p", dali_cpu=False, dali_gpu=True),
    "hevc": CodecSpec("hevc", "libx265", "mp4", "mp4", "yuv420p", dali_cpu=False, dali_gpu=True),
    # NVDEC's MJPEG decode is not verified on Hopper (its JPEG engines are another unit): decoded on the CPU
    "mjpeg": CodecSpec("mjpeg", "mjpeg", "avi", "avi", "yuvj420p", dali_cpu=True, dali_gpu=False),
}
DEFAULT_CODEC = "vp9"
VIDEO_EXTS = tuple(sorted({c.ext for c in CODECS.values()}))


def codec_spec(name: str) -> CodecSpec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}") from None
