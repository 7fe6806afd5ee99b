"""The GPU suite, kept from rotting without a GPU: its wheel parts round-trip, and its dry mode runs the
same loader and step code on the CPU at tiny sizes and writes the same report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu.install import MissingParts, join_wheels
from benchmarks.gpu.prepare import build_shards, split_into_calls
from benchmarks.gpu.suite import STEP_STAGES
from benchmarks.gpu.suite import main as suite_main

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"


def test_wheel_parts_round_trip_and_missing_calls_are_named(tmp_path):
    src = tmp_path / "wheels"
    src.mkdir()
    wheels = {"big-1.0-py3-none-any.whl": bytes(range(256)) * 40, "small-2.0-py3-none-any.whl": b"x" * 100}
    for name, data in wheels.items():
        (src / name).write_bytes(data)
    calls = tmp_path / "calls"
    index = split_into_calls(sorted(src.glob("*.whl")), calls, call_mb=4000 / 2**20)  # 4000-byte calls
    assert index["calls"] == 3 and len(index["wheels"]["big-1.0-py3-none-any.whl"]["chunks"]) == 3
    assert all(sum(p.stat().st_size for p in f.glob("*.part*")) <= 4000 for f in calls.iterdir())
    out = tmp_path / "joined"
    out.mkdir()
    joined = join_wheels(calls, out)
    assert {p.name: p.read_bytes() for p in joined} == wheels
    (calls / "02" / "index.json").unlink()  # call 2 never arrived
    for p in (calls / "02").glob("*.part*"):
        p.unlink()
    with pytest.raises(MissingParts, match="calls 02 of 3 have not arrived"):
        join_wheels(calls, out)


def test_a_cut_short_part_fails_the_checksum(tmp_path):
    src = tmp_path / "w"
    src.mkdir()
    (src / "a-1-py3-none-any.whl").write_bytes(b"abc" * 1000)
    calls = tmp_path / "calls"
    split_into_calls([src / "a-1-py3-none-any.whl"], calls, call_mb=1)
    part = next(calls.glob("01/*.part000"))
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(MissingParts, match="do not match its sha256"):
        join_wheels(calls, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_suite_runs_every_measurement_on_the_cpu(tmp_path):
    root = tmp_path / "shards"
    build_shards(VIDEOS, root, tmp_path / "videos", codecs=("vp9",), short_side=48, train_clip="8x4@30")
    out = tmp_path / "out"
    assert suite_main(["--out", str(out), "--dry", "--shards-root", str(root), "--budget-s", "600"]) == 0
    result = json.loads((out / "suite.json").read_text())
    (loader,) = result["loader"]
    assert loader["shards"] == "vp9" and loader["clips_per_s"] > 0
    steps = result["rows"]
    seen = {(r["stage"], r["variant"]) for r in steps if r.get("fits")}
    for stage in STEP_STAGES:
        assert (stage, "eager") in seen and (stage, "ckpt") in seen, stage
    assert ("teacher", "compile") in seen and ("teacher", "compile+ckpt") in seen
    assert all(r["mfu"] > 0 and r["flops_per_clip"] > 0 for r in steps if r.get("fits"))
    summary = result["summary"]
    assert set(summary["fastest"]) == {f"tiny/{s}" for s in STEP_STAGES}
    assert summary["loader_over_training"]["tiny/teacher"] > 0
