"""Procedural scenes for the synthetic dataset: pure numpy, no I/O.

A task (TASKS) names the classes and the scene statistics. Every class belongs to a time-reversal pair. A scene (background, distractors, one target object) is
drawn from an RNG for the *pair*; the first class of the pair plays it forwards, the second plays the
very same frames backwards. Within a pair the set of frames is therefore identical and no single
frame carries the label: only the order of frames does. Every nuisance motion (distractors, moving
backgrounds, the target's drift or spin) is drawn from a distribution that is symmetric under time
reversal, so the reversed video is an equally likely draw of the other class.

Geometry is in normalised frame units (the frame is the unit square, y points down), so a scene's
content does not depend on the pixel size it is rendered at. An angle that increases turns the object
clockwise on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "noise")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "stripes", "moving")
_ROUND_SHAPES = ("disc", "ring")  # a solid one shows no rotation at all
_CHUNK = 16  # frames rendered per vectorised step (bounds memory at large sizes)


@dataclass(frozen=True)
class Task:
    """A labelled synthetic task: its time-reversal pairs and the statistics of its scenes."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    motions: tuple[str, ...]  # what the target does in the forward (first) class of each pair
    backgrounds: tuple[str, ...]
    max_distractors: int  # 0..max_distractors small sprites, each in front of or behind the target
    target_scale: tuple[float, float]  # half-size range of the target (frame units), except for "scale"
    purpose: str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(name for pair in self.pairs for name in pair)

    @property
    def hflip_labels(self) -> dict[str, str]:
        """What each class becomes when the video is mirrored left-right (only horizontal motion and
        rotation change); a loader that flips training views relabels them with this."""
        swap = {"move_right": "move_left", "move_left": "move_right", "rotate_clockwise": "rotate_counterclockwise",
                "rotate_counterclockwise": "rotate_clockwise"}
        return {c: swap.get(c, c) for c in self.classes}


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("reversal10",
         pairs=(("move_right", "move_left"), ("move_down", "move_up"), ("rotate_clockwise", "rotate_counterclockwise"),
                ("approach", "recede"), ("fade_in", "fade_out")),
         motions=("move_x", "move_y", "rotate", "scale", "fade"), backgrounds=BACKGROUNDS, max_distractors=3,
         target_scale=(0.1, 0.16),
         purpose="the hard task: five kinds of motion, each with its time reversal, small targets among "
                 "distractors and moving or textured backgrounds; only the order of frames tells a pair apart"),
    Task("directions4",
         pairs=(("move_right", "move_left"), ("move_down", "move_up")),
         motions=("move_x", "move_y"), backgrounds=("plain", "gradient", "noise"), max_distractors=1,
         target_scale=(0.15, 0.22),
         purpose="the calibrated task: one large object moving in one of four directions over a still "
                 "background; no single frame gives the label away (each class is another's time reversal), "
                 "but the motion spans most of the frame, so an encoder that sees motion can tell them apart"),
)}
DEFAULT_TASK = "reversal10"
PAIRS: tuple[tuple[str, str], ...] = TASKS[DEFAULT_TASK].pairs
CLASSES: tuple[str, ...] = TASKS[DEFAULT_TASK].classes


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown synthetic task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]




@dataclass(frozen=True)
class Texture:
    kind: str
    colors: np.ndarray  # (2, 3) float32 in [0, 1]
    freq: float
    angle: float
    grid: np.ndarray  # (n, n, 3) float32, used by "noise"


@dataclass(frozen=True)
class Sprite:
    """An object whose state is affine (or geometric for scale) in normalised time t in [0, 1]."""

    shape: str
    texture: Texture
    center0: np.ndarray  # (2,) x, y at t = 0
    displacement: np.ndarray  # (2,) centre(t) = center0 + t * displacement
    angle0: float
    spin: float  # angle(t) = angle0 + t * spin, radians, positive = clockwise
    scale0: float  # half-size in frame units
    growth: float  # scale(t) = scale0 * growth ** t
    opacity0: float
    opacity1: float  # opacity(t) linear from opacity0 to opacity1

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cx, cy, angle, scale, opacity) at times t, each shaped like t."""
        cx = self.center0[0] + t * self.displacement[0]
        cy = self.center0[1] + t * self.displacement[1]
        angle = self.angle0 + t * self.spin
        scale = self.scale0 * self.growth**t
        opacity = self.opacity0 + t * (self.opacity1 - self.opacity0)
        return cx, cy, angle, scale, opacity


@dataclass(frozen=True)
class Background:
    kind: str
    colors: np.ndarray  # (2, 3)
    angle: float
    freq: float
    coarse: np.ndarray  # (n, n, 3) colour grid
    fine: np.ndarray  # (m, m, 1) grain grid
    velocity: np.ndarray  # (2,) texture shift over the whole video, for "moving"
    moving_stripes: bool


@dataclass(frozen=True)
class Scene:
    background: Background
    behind: tuple[Sprite, ...]
    target: Sprite
    front: tuple[Sprite, ...]


@dataclass(frozen=True)
class TargetTrack:
    """Ground truth for the labelled object, per frame in playback order (for tests and analysis)."""

    center: np.ndarray  # (T, 2) x, y in frame units
    angle: np.ndarray  # (T,) radians, increasing = clockwise
    scale: np.ndarray  # (T,)
    opacity: np.ndarray  # (T,)


@dataclass(frozen=True)
class SynthVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8
    label: str
    target_alpha: np.ndarray  # (T, H, W) float32: the target's own coverage x opacity, before occlusion
    track: TargetTrack


# ----------------------------------------------------------------------------- drawing (RNG) --


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


def _color_away_from(rng: np.random.Generator, ref: np.ndarray, min_dist: float) -> np.ndarray:
    """A random colour at least min_dist (RGB Euclidean) from ref; bounded rejection, so deterministic."""
    best, best_dist = _color(rng), -1.0
    for _ in range(16):
        c = _color(rng)
        d = float(np.linalg.norm(c - ref))
        if d >= min_dist:
            return c
        if d > best_dist:
            best, best_dist = c, d
    return best


def _draw_texture(rng: np.random.Generator, kind: str, avoid: np.ndarray | None) -> Texture:
    c1 = _color(rng) if avoid is None else _color_away_from(rng, avoid, 0.45)
    c2 = _color_away_from(rng, c1, 0.35)
    if kind == "solid":
        c2 = c1
    n = int(rng.integers(3, 6))
    w = rng.uniform(0.0, 1.0, (n, n, 1))
    grid = (c1 + w * (c2 - c1) + rng.normal(0.0, 0.06, (n, n, 3))).astype(np.float32)
    return Texture(
        kind=kind,
        colors=np.stack([c1, c2]).astype(np.float32),
        freq=float(rng.uniform(1.2, 2.5)),
        angle=float(rng.uniform(0.0, np.pi)),
        grid=np.clip(grid, 0.0, 1.0),
    )


def _draw_background(rng: np.random.Generator, kinds: Sequence[str]) -> Background:
    kind = kinds[int(rng.integers(len(kinds)))]
    c1 = _color(rng)
    c2 = np.clip(c1 + rng.uniform(-0.35, 0.35, 3), 0.0, 1.0).astype(np.float32)
    n = int(rng.integers(4, 8))
    w = rng.uniform(0.0, 1.0, (n, n, 1))
    coarse = (c1 + w * (c2 - c1)).astype(np.float32)
    fine = rng.normal(0.0, 0.05, (16, 16, 1)).astype(np.float32)
    direction = rng.uniform(0.0, 2 * np.pi)
    speed = rng.uniform(0.15, 0.5)
    return Background(
        kind=kind,
        colors=np.stack([c1, c2]).astype(np.float32),
        angle=float(rng.uniform(0.0, 2 * np.pi)),
        freq=float(rng.uniform(2.0, 6.0)),
        coarse=coarse,
        fine=fine,
        velocity=np.array([np.cos(direction), np.sin(direction)]) * speed,
        moving_stripes=bool(rng.integers(2)),
    )


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _path_start(rng: np.random.Generator, displacement: np.ndarray, margin: float) -> np.ndarray:
    """A start point such that the straight path stays within [margin, 1 - margin] where possible."""
    start = np.empty(2)
    for axis in range(2):
        d = displacement[axis]
        lo, hi = margin - min(0.0, d), 1.0 - margin - max(0.0, d)
        start[axis] = rng.uniform(lo, hi) if lo < hi else 0.5 - d / 2
    return start


def _draw_target(rng: np.random.Generator, motion: str, bg_mean: np.ndarray, scale: tuple[float, float]) -> Sprite:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    kinds = TEXTURES[1:] if motion == "rotate" and shape in _ROUND_SHAPES else TEXTURES
    texture = _draw_texture(rng, kinds[int(rng.integers(len(kinds)))], avoid=bg_mean)
    angle0 = float(rng.uniform(0.0, 2 * np.pi))
    scale0, growth = float(rng.uniform(*scale)), 1.0
    opacity0, opacity1 = 1.0, 1.0
    # Nuisances, symmetric under reversal: a small drift in any direction, a small spin either way.
    drift = _unit(rng.uniform(0.0, 2 * np.pi)) * rng.uniform(0.0, 0.1)
    spin = float(rng.uniform(-0.25, 0.25) * np.pi)
    if motion in ("move_x", "move_y"):
        heading = rng.uniform(-35.0, 35.0) + (90.0 if motion == "move_y" else 0.0)
        drift = _unit(np.deg2rad(heading)) * rng.uniform(0.3, 0.55)
    elif motion == "rotate":
        spin = float(rng.uniform(0.5, 1.25) * np.pi)
    elif motion == "scale":
        scale0, growth = float(rng.uniform(0.065, 0.095)), float(rng.uniform(1.8, 2.6))
    elif motion == "fade":
        opacity0 = 0.0
    else:
        raise ValueError(f"unknown motion {motion!r}")
    margin = 0.8 * scale0 * growth
    return Sprite(
        shape=shape,
        texture=texture,
        center0=_path_start(rng, drift, margin),
        displacement=drift,
        angle0=angle0,
        spin=spin,
        scale0=scale0,
        growth=growth,
        opacity0=opacity0,
        opacity1=opacity1,
    )


def _draw_distractor(rng: np.random.Generator) -> Sprite:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    texture = _draw_texture(rng, TEXTURES[int(rng.integers(len(TEXTURES)))], avoid=None)
    return Sprite(
        shape=shape,
        texture=texture,
        center0=rng.uniform(0.1, 0.9, 2),
        displacement=_unit(rng.uniform(0.0, 2 * np.pi)) * rng.uniform(0.0, 0.5),
        angle0=float(rng.uniform(0.0, 2 * np.pi)),
        spin=float(rng.uniform(-1.0, 1.0) * np.pi),
        scale0=float(rng.uniform(0.04, 0.075)),
        growth=float(np.exp(rng.uniform(-0.4, 0.4))),
        opacity0=1.0,
        opacity1=1.0,
    )


def draw_scene(rng: np.random.Generator, motion: str, task: Task) -> Scene:
    """All random choices of one video; `motion` is the forward class's motion (see Task.motions)."""
    background = _draw_background(rng, task.backgrounds)
    target = _draw_target(rng, motion, background.colors.mean(axis=0), task.target_scale)
    behind: list[Sprite] = []
    front: list[Sprite] = []
    for _ in range(int(rng.integers(0, task.max_distractors + 1))):
        sprite = _draw_distractor(rng)
        (front if rng.integers(2) else behind).append(sprite)
    return Scene(background=background, behind=tuple(behind), target=target, front=tuple(front))


# ------------------------------------------------------------------------- rendering (pure) --


def _bilinear(grid: np.ndarray, gx: np.ndarray, gy: np.ndarray, wrap: bool) -> np.ndarray:
    """Sample an (h, w, C) grid at fractional cell coordinates; returns gx.shape + (C,)."""
    h, w = grid.shape[:2]
    if wrap:
        gx, gy = np.mod(gx, w), np.mod(gy, h)
    else:
        gx, gy = np.clip(gx, 0, w - 1), np.clip(gy, 0, h - 1)
    x0, y0 = np.floor(gx), np.floor(gy)
    fx, fy = (gx - x0)[..., None], (gy - y0)[..., None]
    x0, y0 = x0.astype(np.intp), y0.astype(np.intp)
    x1 = (x0 + 1) % w if wrap else np.minimum(x0 + 1, w - 1)
    y1 = (y0 + 1) % h if wrap else np.minimum(y0 + 1, h - 1)
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _box_sdf(x: np.ndarray, y: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Equilateral triangle centred on its centroid, one vertex along local +y.

    Circumradius 1.15 so that its area is closer to the other shapes' at the same scale.
    """
    # Inigo Quilez's sdEquilateralTriangle; r is half the side length (circumradius * sqrt(3) / 2).
    k = np.float32(np.sqrt(3.0))
    r = np.float32(1.15 * np.sqrt(3.0) / 2)
    px, py = x, y
    px = np.abs(px) - r
    py = py + r / k
    flip = px + k * py > 0
    px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * r, 0)
    return -np.hypot(px, py) * np.sign(py)


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) in local units, where the shape's half-size is about 1."""
    if shape == "disc":
        return np.hypot(x, y) - 1
    if shape == "square":
        return _box_sdf(x, y, 0.82, 0.82)
    if shape == "triangle":
        return _triangle_sdf(x, y)
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 0.72) - 0.28
    if shape == "cross":
        return np.minimum(_box_sdf(x, y, 1.0, 0.34), _box_sdf(x, y, 0.34, 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _texture_color(tex: Texture, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c1, c2 = tex.colors[0], tex.colors[1]
    if tex.kind == "solid":
        return np.broadcast_to(c1, (*x.shape, 3))
    if tex.kind == "stripes":
        u = x * np.float32(np.cos(tex.angle)) + y * np.float32(np.sin(tex.angle))
        m = 0.5 + 0.5 * np.clip(3 * np.sin(np.pi * tex.freq * u), -1, 1)
    elif tex.kind == "checker":
        f = np.float32(np.pi * tex.freq)
        m = 0.5 + 0.5 * np.clip(4 * np.sin(f * x) * np.sin(f * y), -1, 1)
    elif tex.kind == "noise":
        n = tex.grid.shape[0]
        return _bilinear(tex.grid, (x + 1) * (n - 1) / 2, (y + 1) * (n - 1) / 2, wrap=False)
    else:
        raise ValueError(f"unknown texture {tex.kind!r}")
    return c1 + m[..., None].astype(np.float32) * (c2 - c1)


def sprite_layer(
    sprite: Sprite, t: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (n, H, W, 3) and alpha (n, H, W) of a sprite at times t (n,) on pixel centres xs, ys."""
    cx, cy, angle, scale, opacity = (np.asarray(v, np.float32)[:, None, None] for v in sprite.state(t))
    dx, dy = xs[None, None, :] - cx, ys[None, :, None] - cy
    cos, sin = np.cos(angle), np.sin(angle)
    lx, ly = (cos * dx + sin * dy) / scale, (cos * dy - sin * dx) / scale
    # Anti-aliased coverage: signed distance in pixels, half a pixel either side of the edge.
    sdf_px = shape_sdf(sprite.shape, lx, ly) * scale * size
    alpha = np.clip(0.5 - sdf_px, 0, 1) * opacity
    return _texture_color(sprite.texture, lx, ly), alpha.astype(np.float32)


def background_layer(bg: Background, t: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(n or 1, H, W, 3) colour of the background at times t."""
    c1, c2 = bg.colors[0], bg.colors[1]
    x, y = xs[None, None, :], ys[None, :, None]
    u = x * np.float32(np.cos(bg.angle)) + y * np.float32(np.sin(bg.angle))
    if bg.kind == "plain":
        return np.broadcast_to(c1, (1, len(ys), len(xs), 3))
    if bg.kind == "gradient":
        m = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        return c1 + m[..., None] * (c2 - c1)
    if bg.kind == "stripes":
        m = 0.5 + 0.5 * np.sin(2 * np.pi * bg.freq * u)
        return c1 + m[..., None] * (c2 - c1)
    if bg.kind == "noise":
        n, m = bg.coarse.shape[0], bg.fine.shape[0]
        base = _bilinear(bg.coarse, x * (n - 1), y * (n - 1), wrap=False)
        grain = _bilinear(bg.fine, x * (m - 1), y * (m - 1), wrap=False)
        return base + grain
    if bg.kind == "moving":
        tt = np.asarray(t, np.float32)[:, None, None]
        mx = x - tt * np.float32(bg.velocity[0])
        my = y - tt * np.float32(bg.velocity[1])
        if bg.moving_stripes:
            v = mx * np.float32(np.cos(bg.angle)) + my * np.float32(np.sin(bg.angle))
            m = 0.5 + 0.5 * np.sin(2 * np.pi * bg.freq * v)
            return c1 + m[..., None] * (c2 - c1)
        n = bg.coarse.shape[0]  # periodic noise: the grid wraps, so it can scroll forever
        return _bilinear(bg.coarse, mx * n, my * n, wrap=True)
    raise ValueError(f"unknown background {bg.kind!r}")


def _over(out: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> None:
    a = alpha[..., None]
    out *= 1 - a
    out += color * a


def render_forward(scene: Scene, size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and target alpha (T, H, W) of the scene played forwards."""
    coords = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    video = np.empty((frames, size, size, 3), np.uint8)
    target_alpha = np.empty((frames, size, size), np.float32)
    for start in range(0, frames, _CHUNK):
        k = np.arange(start, min(start + _CHUNK, frames))
        t = k / (frames - 1)
        out = np.array(np.broadcast_to(background_layer(scene.background, t, coords, coords),
                                       (len(k), size, size, 3)), dtype=np.float32)
        for sprite in scene.behind:
            _over(out, *sprite_layer(sprite, t, coords, coords, size))
        color, alpha = sprite_layer(scene.target, t, coords, coords, size)
        _over(out, color, alpha)
        target_alpha[k] = alpha
        for sprite in scene.front:
            _over(out, *sprite_layer(sprite, t, coords, coords, size))
        video[k] = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    return video, target_alpha


def _track(sprite: Sprite, frames: int) -> TargetTrack:
    cx, cy, angle, scale, opacity = sprite.state(np.arange(frames) / (frames - 1))
    return TargetTrack(center=np.stack([cx, cy], axis=1), angle=angle, scale=scale, opacity=opacity)


def _reversed(track: TargetTrack) -> TargetTrack:
    return TargetTrack(track.center[::-1], track.angle[::-1], track.scale[::-1], track.opacity[::-1])


def pair_of(label: str, task: Task = TASKS[DEFAULT_TASK]) -> tuple[int, bool]:
    """(pair index, whether the label is the time-reversed member of its pair)."""
    for i, pair in enumerate(task.pairs):
        if label in pair:
            return i, label == pair[1]
    raise ValueError(f"unknown class {label!r} in task {task.name}; expected one of {task.classes}")


def render_scene(label: str, key: Sequence[int], size: int, frames: int,
                 task: Task = TASKS[DEFAULT_TASK]) -> SynthVideo:
    """Render one video of class `label` from the RNG key (e.g. (seed, index)).

    The two classes of a pair drawn with the same key are exact time reversals of each other.
    """
    if size < 8 or size % 2:
        raise ValueError(f"size must be even and >= 8 (H.264 4:2:0), got {size}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    pair, backward = pair_of(label, task)
    scene = draw_scene(np.random.default_rng(list(key)), task.motions[pair], task)
    video, alpha = render_forward(scene, size, frames)
    track = _track(scene.target, frames)
    if backward:
        video, alpha, track = video[::-1], alpha[::-1], _reversed(track)
    return SynthVideo(np.ascontiguousarray(video), label, np.ascontiguousarray(alpha), track)
