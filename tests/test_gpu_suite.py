"""The GPU suite, kept from rotting without a GPU: its wheel parts round-trip, tier 1's plan fits its device
time, and both tiers' dry modes run the same commands and code on the CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu.install import MissingParts, join_wheels
from benchmarks.gpu.prepare import build_shards, split_into_calls
from benchmarks.gpu.rehearsal import BUDGET_S, EXTRA_STEPS, STEP_PLAN, estimated_gpu_seconds
from benchmarks.gpu.suite import main as suite_main

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "videos"
DRY_RESULT = REPO / "benchmarks" / "results" / "gpu-tier1-dry.json"
TIER1_COMMANDS = ("synth-train", "shards-train", "synth-val", "shards-val", "teacher (SIGTERM to the rank)",
                  "teacher-resume", "targets", "student-online", "student-cached", "probe")


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


def test_tier1_plan_fits_its_device_time():
    """Tier 1's device time, estimated from its dry run's command times (benchmarks/results/gpu-tier1-dry.json,
    `python benchmarks/gpu/rehearsal.py --out DIR --dry`) and the step cases it plans, fits its budget."""
    dry = json.loads(DRY_RESULT.read_text())
    seconds = dry["command_seconds"]
    assert set(seconds) == set(TIER1_COMMANDS)  # measured for the commands the rehearsal runs now
    assert estimated_gpu_seconds(seconds) <= BUDGET_S
    assert estimated_gpu_seconds(seconds, STEP_PLAN + EXTRA_STEPS) > BUDGET_S  # the extras only if time is left


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_tier1_runs_the_users_commands_without_dali(tmp_path):
    """The rehearsal on the CPU with DALI made unimportable (the GPU machine's tier 1 has no DALI wheel)."""
    blocker = tmp_path / "blocker" / "nvidia" / "dali"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tier 1 runs without DALI')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(REPO)])}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu/rehearsal.py", "--out", str(out), "--dry"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((out / "suite.json").read_text())
    commands = {r["command"]: r for r in result["commands"]}
    assert all(commands[name]["ok"] for name in TIER1_COMMANDS), result["commands"]
    assert commands["teacher (SIGTERM to the rank)"]["rc"] == 75 and commands["teacher-resume"]["rc"] == 0
    assert commands["student metrics"]["device"] == "cpu" and commands["probe result"]["knn_top1"] >= 0
    fitting = {(r["stage"], r["variant"]) for r in result["rows"] if r.get("fits")}
    assert {(stage, "compile" if compiled else "eager") for stage, compiled in STEP_PLAN} <= fitting
    assert all(r["mfu"] > 0 and r["flops_per_clip"] > 0 for r in result["rows"] if r.get("fits"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_tier2_measures_the_loader_against_tier1s_steps(tmp_path):
    root = tmp_path / "shards"
    build_shards(VIDEOS, root, tmp_path / "videos", codecs=("vp9",), short_side=48, train_clip="8x4@30")
    tier1 = tmp_path / "tier1.json"
    tier1.write_text(json.dumps({"rows": [
        {"size": "tiny", "stage": "teacher", "variant": "eager", "batch": 2, "fits": True, "clips_per_s": 10.0},
        {"size": "tiny", "stage": "teacher", "variant": "compile", "batch": 2, "fits": True, "clips_per_s": 20.0},
        {"size": "tiny", "stage": "vjepa", "variant": "eager", "batch": 4, "fits": False}]}))
    out = tmp_path / "out"
    assert suite_main(["--out", str(out), "--dry", "--shards-root", str(root), "--tier1", str(tier1),
                       "--budget-s", "600"]) == 0
    result = json.loads((out / "suite-tier2.json").read_text())
    (loader,) = result["rows"]
    assert loader["shards"] == "vp9" and loader["clips_per_s"] > 0
    summary = result["summary"]
    assert set(summary["fastest"]) == {"tiny/teacher"} and summary["fastest"]["tiny/teacher"]["variant"] == "compile"
    assert summary["loader_over_training"]["tiny/teacher"] == pytest.approx(loader["clips_per_s"] / 20.0)
