"""Training-rate shards: shards stored at the frame rate a run samples, so the loader decodes no frame
it throws away.

A run that takes 16 frames at stride 4 from 30 fps video (`16x4@30`) uses one frame in four. Stored at
7.5 fps and read at stride 1, the same seconds of video decode about twice as fast (measured; see
README). The price: another stride or rate later needs new shards. The shard job records the clip it
was built for in manifest.json (`train_clip`), and the loader warns when a run would decode frames it
drops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*@\s*([0-9./]+)\s*$")


@dataclass(frozen=True)
class TrainClip:
    frames: int  # frames per training clip
    stride: int  # stride at the source rate
    rate: Fraction  # the source rate the stride is counted at

    @classmethod
    def parse(cls, text: str) -> TrainClip:
        """`FRAMESxSTRIDE@FPS`, e.g. `16x4@30` or `16x2@30000/1001`."""
        m = _SPEC.match(text or "")
        if not m:
            raise ValueError(f"a training clip is FRAMESxSTRIDE@FPS (e.g. 16x4@30), got {text!r}")
        frames, stride = int(m.group(1)), int(m.group(2))
        try:
            rate = Fraction(m.group(3))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"training clip {text!r}: {m.group(3)!r} is not a frame rate") from None
        if frames < 1 or stride < 1 or rate <= 0:
            raise ValueError(f"training clip {text!r}: frames, stride and rate must be positive")
        return cls(frames, stride, rate)

    @property
    def stored_fps(self) -> Fraction:
        """The rate the shards are stored at: one stored frame per sampled frame."""
        return self.rate / self.stride

    @property
    def seconds(self) -> float:
        return float(self.frames * self.stride / self.rate)

    def spec(self) -> str:
        return f"{self.frames}x{self.stride}@{self.rate}"

    def to_json(self) -> dict:
        return {"spec": self.spec(), "frames": self.frames, "source_stride": self.stride,
                "source_fps": str(self.rate), "fps": str(self.stored_fps), "load_stride": 1,
                "seconds": round(self.seconds, 6)}


def wasted_decode_note(manifest: dict, frame_stride: int) -> str | None:
    """A warning when a run reads shards at a stride > 1: it decodes frames it drops. None when fine."""
    if frame_stride <= 1:
        return None
    clip = manifest.get("train_clip")
    rate = manifest.get("fps") or "its source rate"
    built = f" (built for {clip['spec']}, to be read at stride 1)" if clip else ""
    return (f"note: data.frame_stride={frame_stride} decodes {frame_stride - 1} of every {frame_stride} frames of "
            f"the shards at {rate} fps only to drop them{built}. For this clip, rebuild the shards with "
            f"`python -m dataprep.shards --train-clip FRAMESx{frame_stride}@RATE` and train with "
            "data.frame_stride=1 (about 2x cheaper decoding, measured).")
