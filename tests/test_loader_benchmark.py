"""The loader benchmark's baselines and report: real videos through decord and torchcodec, the same seconds
of video as the shard clip, and the benchmark's JSON with its stage profile and step budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.baselines import BASELINES, baseline_loader, source_stride, unavailable
from benchmarks.loader import main as loader_main
from benchmarks.loader import source_clips
from benchmarks.loader_profile import STAGES, step_budget
from dataprep.shard_job import JobConfig, run_job
from salt.data.config import LoaderConfig
from salt.data.shardset import ShardSet

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"


def _torchcodec_loads() -> bool:
    return unavailable("vjepa-torchcodec") is None  # opens a decoder: FFmpeg's libraries load only then


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("real")
    for name in ("box.mp4", "cup.mp4"):
        (src / name).symlink_to(VIDEOS / name)
    out = tmp_path_factory.mktemp("shards") / "real"
    run_job(JobConfig(input=str(src), name="real", short_side=64, clip_seconds=3.0, train_clip="8x4@30"), out,
            progress=False, handle_signals=False)
    return out


def test_source_stride_covers_the_same_seconds():
    assert source_stride(29.97, 7.5, 1) == 4  # 30 fps source, shards at 7.5 fps read at stride 1
    assert source_stride(10.0, 7.5, 1) == 1  # never below one frame
    assert source_stride(30.0, 30.0, 4) == 4


def test_source_clips_name_the_original_videos_with_their_stride(real_shards):
    clips = source_clips(ShardSet(real_shards), str(VIDEOS), frame_stride=1)
    assert len(clips) == len(ShardSet(real_shards))
    by_name = {Path(p).name: s for p, s in clips}
    assert by_name == {"box.mp4": 4, "cup.mp4": 4}  # 29.97 and 26.78 fps against 7.5 fps shards


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_load_clips_of_the_training_geometry(name, real_shards):
    if "torchcodec" in name and not _torchcodec_loads():
        pytest.skip("torchcodec cannot load FFmpeg's libraries here (.ci/ffmpeg-libs.sh installs them)")
    cfg = LoaderConfig(shards=str(real_shards), batch_size=2, num_frames=8, frame_stride=1, crop_size=32)
    clips = source_clips(ShardSet(real_shards), str(VIDEOS), 1)
    loader = baseline_loader(name, cfg.recipe(), 2, 0, cfg.mean, cfg.std, sources=[p for p, _ in clips],
                             source_strides=[s for _, s in clips], shards_dir=str(real_shards))
    batch = next(iter(loader))
    assert batch.shape == (2, 3, 8, 32, 32) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and batch.std() > 0.1 and -2.2 <= batch.min() and batch.max() <= 2.7


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="unknown baseline 'vjepa-pyav'"):
        baseline_loader("vjepa-pyav", LoaderConfig(shards="x").recipe(), 2, 0, (0, 0, 0), (1, 1, 1))


def test_benchmark_writes_rows_profile_and_step_budget(real_shards, tmp_path, capsys):
    out = tmp_path / "loader.json"
    assert loader_main(["--shards", str(real_shards), "--loader", "dali", "dali-decode", "dali-native-decode",
                        "decode-rgb",
                        "--batch-size", "2", "--crop-size", "32", "--threads", "1", "--seconds", "0.3",
                        "--repeats", "1", "--profile", "--profile-batches", "2", "--target-step-ms", "50",
                        "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["loader"]: r for r in result["rows"]}
    assert set(rows) == {"dali", "dali-decode", "dali-native-decode", "decode-rgb"}
    assert rows["dali-decode"]["vs_decode_only"] == pytest.approx(1.0)
    assert result["config"]["num_frames"] == 8 and result["config"]["frame_stride"] == 1  # from --train-clip
    prof = result["profile"]
    assert set(prof["stages_s"]) == set(STAGES) and all(t > 0 for t in prof["stages_s"].values())
    budget = result["step_budget"]
    assert budget["clips_per_s_needed"] == pytest.approx(2 / 0.05)
    printed = capsys.readouterr().out
    assert "crop/resize/flip" in printed and "clips/s per process" in printed


def test_a_baseline_that_cannot_run_here_is_one_line_and_the_rest_are_measured(real_shards, tmp_path, capsys,
                                                                               monkeypatch):
    import benchmarks.loader as loader

    reason = "torchcodec cannot load FFmpeg's shared libraries (...): install them"
    monkeypatch.setattr(loader, "unavailable", lambda name: reason if "torchcodec" in name else None)
    out = tmp_path / "loader.json"
    assert loader_main(["--shards", str(real_shards), "--loader", "dali", "vjepa-torchcodec", "shards-torchcodec",
                        "--batch-size", "2", "--crop-size", "32", "--threads", "1", "--seconds", "0.3",
                        "--repeats", "1", "--json", str(out)]) == 0
    assert [r["loader"] for r in json.loads(out.read_text())["rows"]] == ["dali"]
    err = capsys.readouterr().err
    assert err.count(f": skipped: {reason}") == 2 and "Traceback" not in err


def test_unavailable_says_how_to_get_a_missing_baseline(monkeypatch):
    import sys

    from benchmarks import baselines

    monkeypatch.setitem(sys.modules, "decord", None)
    baselines.unavailable.cache_clear()
    try:
        assert "pip install -e '.[bench]'" in baselines.unavailable("vjepa-decord")
    finally:
        baselines.unavailable.cache_clear()


def test_step_budget_says_when_the_loader_is_too_slow():
    slow = step_budget(clips_per_s=10.0, batch_size=8, views=2, target_step_ms=400)
    assert slow["clips_per_s_needed"] == pytest.approx(20.0) and slow["views_per_s_needed"] == pytest.approx(40.0)
    assert slow["loader_bound"] and slow["headroom"] == pytest.approx(0.5)
    assert not step_budget(clips_per_s=30.0, batch_size=8, views=1, target_step_ms=400)["loader_bound"]
