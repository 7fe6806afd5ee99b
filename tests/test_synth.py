"""The synthetic dataset: files, determinism, and that its labels need temporal understanding."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from dataprep.synth import CLASSES, PAIRS, class_of, render_sample, render_video, write_dataset
from dataprep.synth_render import Sprite, Texture, render_scene, sprite_layer

SIZE, FRAMES, VIDEOS = 32, 12, 20
KEYS = [(7, i) for i in range(8)]


def _read_labels(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_w1")
    write_dataset(out, VIDEOS, seed=3, size=SIZE, frames=FRAMES, workers=1, progress=False)
    return out


def test_classes_are_pairs_and_filesystem_safe() -> None:
    assert len(CLASSES) >= 8
    assert len(set(CLASSES)) == len(CLASSES)
    assert [c for pair in PAIRS for c in pair] == list(CLASSES)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in CLASSES)


def test_labels_balanced_and_files_decode(dataset: Path) -> None:
    rows = _read_labels(dataset / "labels.csv")
    assert list(rows[0]) == ["path", "label"]
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert len(rows) == VIDEOS
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(CLASSES) and set(counts.values()) == {VIDEOS // len(CLASSES)}
    for row in rows:
        path = dataset / row["path"]
        assert path.parent.name == row["label"] and re.fullmatch(r"\d{6}\.mp4", path.name)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == FRAMES
        assert frames[0].shape == (SIZE, SIZE, 3)
    assert not list(dataset.rglob("*.tmp*")), "temporary files left behind"


def test_decoded_video_matches_render(dataset: Path) -> None:
    """The file holds the rendered frames up to H.264 loss (catches channel/order mix-ups)."""
    frames, label = render_video(5, seed=3, size=SIZE, frames=FRAMES)
    with av.open(str(dataset / label / "000005.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    err = np.abs(decoded.astype(np.int16) - frames.astype(np.int16)).mean()
    assert err < 8, err


def test_output_independent_of_workers_and_prefix_stable(dataset: Path, tmp_path: Path) -> None:
    more = VIDEOS + 4
    write_dataset(tmp_path, more, seed=3, size=SIZE, frames=FRAMES, workers=2, progress=False)
    first, second = _tree_digest(dataset), _tree_digest(tmp_path)
    videos = {k: v for k, v in first.items() if k != "labels.csv"}
    assert videos and all(second[k] == v for k, v in videos.items())
    rows, more_rows = _read_labels(dataset / "labels.csv"), _read_labels(tmp_path / "labels.csv")
    assert len(more_rows) == more and all(r in more_rows for r in rows)
    # Same count with 2 workers: byte-identical tree, labels.csv included.
    again = tmp_path / "again"
    write_dataset(again, VIDEOS, seed=3, size=SIZE, frames=FRAMES, workers=2, progress=False)
    assert _tree_digest(again) == first


def test_rerun_over_existing_output_is_identical(dataset: Path) -> None:
    before = _tree_digest(dataset)
    write_dataset(dataset, VIDEOS, seed=3, size=SIZE, frames=FRAMES, workers=1, progress=False)
    assert _tree_digest(dataset) == before


def test_render_is_pure_and_seeded() -> None:
    a, label = render_video(4, seed=0, size=SIZE, frames=FRAMES)
    b, _ = render_video(4, seed=0, size=SIZE, frames=FRAMES)
    c, _ = render_video(4, seed=1, size=SIZE, frames=FRAMES)
    assert label == class_of(4) == CLASSES[4]
    assert a.dtype == np.uint8 and a.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_different_seeds_give_different_files(tmp_path: Path) -> None:
    write_dataset(tmp_path / "s0", 3, seed=0, size=16, frames=4, progress=False)
    write_dataset(tmp_path / "s1", 3, seed=1, size=16, frames=4, progress=False)
    d0, d1 = _tree_digest(tmp_path / "s0"), _tree_digest(tmp_path / "s1")
    assert d0["labels.csv"] == d1["labels.csv"]
    assert d0["dataset.json"] == d1["dataset.json"]
    assert all(d0[k] != d1[k] for k in d0 if k not in ("labels.csv", "dataset.json"))


@pytest.mark.parametrize("pair", PAIRS, ids=[a for a, _ in PAIRS])
def test_pair_members_have_identical_frame_sets(pair: tuple[str, str]) -> None:
    """No single frame can tell a pair apart: both classes show exactly the same frames."""
    forward, backward = pair
    for key in KEYS:
        a = render_scene(forward, key, SIZE, FRAMES).frames
        b = render_scene(backward, key, SIZE, FRAMES).frames
        assert sorted(f.tobytes() for f in a) == sorted(f.tobytes() for f in b)
        assert np.array_equal(a, b[::-1])
        assert not np.array_equal(a, b), "the clip must change over time"


def _centroid(alpha: np.ndarray) -> np.ndarray:
    """(T, 2) alpha-weighted x, y of each frame, in pixels."""
    ys, xs = np.mgrid[: alpha.shape[1], : alpha.shape[2]]
    mass = alpha.sum(axis=(1, 2))
    return np.stack([(alpha * xs).sum(axis=(1, 2)), (alpha * ys).sum(axis=(1, 2))], axis=1) / mass[:, None]


def _temporal_statistic(forward: str, video) -> float:
    """A statistic of the target over time whose sign is + for the forward class of each pair."""
    alpha, track = video.target_alpha, video.track
    mass = alpha.sum(axis=(1, 2))
    if forward in ("move_right", "move_down"):
        axis = 0 if forward == "move_right" else 1
        c = _centroid(alpha)
        return float(c[-1, axis] - c[0, axis])
    if forward == "rotate_clockwise":
        return float(track.angle[-1] - track.angle[0])  # screen sense checked in the test below
    if forward in ("approach", "fade_in"):
        return float(mass[-1] - mass[0])
    raise AssertionError(f"no statistic for {forward}")


@pytest.mark.parametrize("pair", PAIRS, ids=[a for a, _ in PAIRS])
def test_temporal_statistic_separates_pairs(pair: tuple[str, str]) -> None:
    """The label is a function of how the target changes over time, for every draw."""
    forward, backward = pair
    for key in KEYS:
        assert _temporal_statistic(forward, render_scene(forward, key, SIZE, FRAMES)) > 0
        assert _temporal_statistic(forward, render_scene(backward, key, SIZE, FRAMES)) < 0


def test_dataset_tracks_are_strongly_labelled() -> None:
    """Label motions clear the nuisance ranges by a margin in the dataset's own videos."""
    for index in range(30):
        v = render_sample(index, seed=11, size=SIZE, frames=FRAMES)
        t = v.track
        sign = -1.0 if v.label == PAIRS[CLASSES.index(v.label) // 2][1] else 1.0
        move = (t.center[-1] - t.center[0]) * sign
        if v.label in ("move_right", "move_left"):
            assert move[0] > 0.2 and abs(move[1]) < move[0]
        elif v.label in ("move_down", "move_up"):
            assert move[1] > 0.2 and abs(move[0]) < move[1]
        elif v.label.startswith("rotate"):
            assert (t.angle[-1] - t.angle[0]) * sign >= 0.5 * np.pi - 1e-9
        elif v.label in ("approach", "recede"):
            assert t.scale[-1 if sign > 0 else 0] / t.scale[0 if sign > 0 else -1] >= 1.8 - 1e-9
        else:
            assert (t.opacity[-1] - t.opacity[0]) * sign == pytest.approx(1.0)


def test_increasing_angle_turns_clockwise_on_screen() -> None:
    """A triangle with a vertex at 6 o'clock, turned by +90 degrees, has a vertex at 9 o'clock.

    Its vertices sit at 6, 10 and 2 o'clock; a clockwise quarter turn moves them to 9, 1 and 5, while
    a counter-clockwise one would give 3, 7 and 11, so a vertex at 9 o'clock pins down the sense.
    """
    tex = Texture("solid", np.ones((2, 3), np.float32), 1.0, 0.0, np.ones((2, 2, 3), np.float32))
    size, reach = 64, 0.3 * 0.95  # scale 0.3 (the vertex is at 1.15x), probe just inside the circumcircle
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size

    def covered(angle: float, dx: float, dy: float) -> bool:
        tri = Sprite("triangle", tex, np.array([0.5, 0.5]), np.zeros(2), angle, 0.0, 0.3, 1.0, 1.0, 1.0)
        _, alpha = sprite_layer(tri, np.zeros(1), coords, coords, size)
        return bool(alpha[0, int((0.5 + dy) * size), int((0.5 + dx) * size)] > 0.5)

    assert covered(0.0, 0.0, reach) and not covered(0.0, 0.0, -reach)  # vertex down, flat edge up
    assert covered(np.pi / 2, -reach, 0.0) and not covered(np.pi / 2, reach, 0.0)  # vertex left


def test_rejects_odd_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_dataset(tmp_path, 2, seed=0, size=33, frames=4, progress=False)
    with pytest.raises(ValueError, match="even"):
        render_video(0, seed=0, size=33, frames=4)


def test_cli_writes_dataset(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dataprep.synth", "--out", str(tmp_path), "--videos", "3", "--seed", "5",
           "--size", "16", "--frames", "4", "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = _read_labels(tmp_path / "labels.csv")
    assert sorted(r["label"] for r in rows) == sorted(CLASSES[:3])
    assert all((tmp_path / r["path"]).is_file() for r in rows)
