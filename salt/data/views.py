"""The view recipe: which frames, which crop and whether to flip, as a pure function of
(sample key, view id, seed). The DALI loader, the reference loader and the teacher-target
precompute job all call these functions, so a view id names the same pixels everywhere.

Training views: a random clip start per decode (views of one decoded clip share the frames), and a
random-resized crop (V-JEPA's scale 0.3-1.0, aspect 0.75-1.35) and flip per view. View id `i` uses
decode `i // views_per_clip`. Evaluation views: `num_clips` evenly spaced clips x `num_crops` crops
along the long side: squares of 7/8 of the short side (V-JEPA's resize-then-centre-crop).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ViewRecipe:
    """The loader config's view fields, frozen (LoaderConfig.recipe(); the defaults live there)."""

    num_frames: int
    frame_stride: int
    crop_size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip: bool
    views_per_clip: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_stride < 1 or self.crop_size < 1 or self.views_per_clip < 1:
            raise ValueError(f"invalid view recipe {self}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"invalid crop scale {self.scale} or ratio {self.ratio}")

    @property
    def span(self) -> int:
        """Source frames one clip covers."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def to_json(self) -> dict:
        return {**asdict(self), "scale": list(self.scale), "ratio": list(self.ratio)}


@dataclass(frozen=True)
class ViewParams:
    start_frame: int
    top: int
    left: int
    height: int  # crop box in source pixels
    width: int
    flip: bool


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _rng(seed: int, key: str, *ids: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, key_hash(key), *ids])


def train_view(recipe: ViewRecipe, key: str, view_id: int, frames: int, height: int, width: int) -> ViewParams:
    """A training view. Short samples start at 0 and repeat their last frame."""
    decode_id = view_id // recipe.views_per_clip
    start_rng = _rng(recipe.seed, key, decode_id, 0)
    last_start = frames - recipe.span
    start = int(start_rng.integers(0, last_start + 1)) if last_start > 0 else 0

    rng = _rng(recipe.seed, key, view_id, 1)
    top, left, h, w = _random_resized_crop(rng, height, width, recipe.scale, recipe.ratio)
    flip = bool(recipe.flip and rng.random() < 0.5)
    return ViewParams(start, top, left, h, w, flip)


def _random_resized_crop(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
                         ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box rule (10 tries, then the centre crop at the clamped ratio)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


EVAL_CROP_FRACTION = 224 / 256  # V-JEPA's evaluation: short side to 256/224 x crop, then centre crop


def eval_view(recipe: ViewRecipe, view_id: int, num_clips: int, num_crops: int, frames: int, height: int,
              width: int) -> ViewParams:
    """Deterministic evaluation view `view_id` in [0, num_clips * num_crops): clip-major."""
    clip, crop = divmod(view_id, num_crops)
    last_start = max(0, frames - recipe.span)
    start = round(last_start * (clip + 0.5) / num_clips) if num_clips > 1 else last_start // 2
    side = max(1, round(min(height, width) * EVAL_CROP_FRACTION))
    pos = 0.5 if num_crops == 1 else crop / (num_crops - 1)
    top = round((height - side) * pos)
    left = round((width - side) * pos)
    return ViewParams(int(start), int(top), int(left), side, side, False)


def frame_indices(recipe: ViewRecipe, start_frame: int, frames: int) -> list[int]:
    """Source frame indices of a clip; past the end the last frame repeats (DALI's pad_mode='edge')."""
    return [min(start_frame + i * recipe.frame_stride, frames - 1) for i in range(recipe.num_frames)]


def cached_view_id(seed: int, key: str, epoch: int, num_cached: int) -> int:
    """Which of the `num_cached` precomputed views a sample uses in an epoch."""
    return int(_rng(seed, key, epoch, 2).integers(0, num_cached))
