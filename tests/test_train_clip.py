"""Training-rate shards: `--train-clip FxS@R` stores R/S fps, records the clip in the manifest, and a
run that reads shards at a stride is told what it wastes."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from test_shards import read_samples
from videos import write_video

from dataprep.shard_job import JobConfig, JobError, run_job
from salt.data.train_clip import TrainClip, wasted_decode_note


def test_parse_and_rates():
    c = TrainClip.parse("16x4@30")
    assert (c.frames, c.stride, c.rate, c.stored_fps) == (16, 4, Fraction(30), Fraction(15, 2))
    assert c.seconds == pytest.approx(64 / 30) and c.spec() == "16x4@30"
    assert TrainClip.parse("8x2@30000/1001").stored_fps == Fraction(15000, 1001)
    for bad in ("16x4", "16@30", "0x4@30", "16x4@0", "axb@c"):
        with pytest.raises(ValueError):
            TrainClip.parse(bad)


def test_shards_at_the_training_rate(tmp_path):
    src = tmp_path / "in"
    write_video(src / "long.mp4", frames=120, fps=30, seed=1)  # 4 s: 30 frames at 7.5 fps
    write_video(src / "short.mp4", frames=48, fps=30, seed=2)  # 1.6 s: 12 frames at 7.5 fps < 16
    m = run_job(JobConfig(input=str(src), name="tr", short_side=32, train_clip="16x4@30", max_fail_frac=1.0),
                tmp_path / "tr", progress=False).manifest
    assert m["fps"] == "15/2" and m["train_clip"]["spec"] == "16x4@30" and m["train_clip"]["load_stride"] == 1
    metas = [json.loads(s["json"]) for s in read_samples(tmp_path / "tr")]
    assert [(x["source"], x["fps"], x["frames"]) for x in metas] == [("long.mp4", 7.5, 30)]
    assert m["num_failed"] == 1 and m["failure_reasons"] == {"too short": 1}


def test_train_clip_and_fps_must_agree():
    with pytest.raises(JobError, match="stores 15/2 fps, but --fps says 10"):
        JobConfig(input=".", name="x", train_clip="16x4@30", fps="10").validate()
    JobConfig(input=".", name="x", train_clip="16x4@30", fps="7.5").validate()
    with pytest.raises(JobError, match="--train-clip: a training clip is FRAMESxSTRIDE@FPS"):
        JobConfig(input=".", name="x", train_clip="16/4").validate()


def test_wasted_decode_note():
    assert wasted_decode_note({"fps": "30", "train_clip": None}, 1) is None
    note = wasted_decode_note({"fps": "30", "train_clip": None}, 4)
    assert "decodes 3 of every 4 frames" in note and "--train-clip FRAMESx4@RATE" in note
    built = wasted_decode_note({"fps": "15/2", "train_clip": TrainClip.parse("16x4@30").to_json()}, 2)
    assert "built for 16x4@30" in built


def test_a_run_at_a_stride_is_told_what_it_wastes(synth_shards, tmp_path, capsys):
    from test_train import train

    assert train(synth_shards, tmp_path / "r", "teacher", 1, "--run.log_every=1") == 0  # MICRO: stride 4
    out = capsys.readouterr().out
    assert "data.frame_stride=4 decodes 3 of every 4 frames" in out
