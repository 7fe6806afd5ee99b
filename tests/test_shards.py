"""Shard preparation: contents, failure accounting, determinism, resume, parts, and real readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import webdataset as wds
from videos import REAL_VIDEOS, copy_real_videos, write_bad_files, write_video

from dataprep import shards as shards_mod
from dataprep.inputs import list_inputs
from dataprep.journal import Journal
from dataprep.shard_job import JobConfig, JobError, merge_parts, run_job
from dataprep.shards import main

REPO = Path(__file__).resolve().parents[1]


def tar_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def read_samples(folder: Path) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    urls = [str(folder / s["path"]) for s in manifest["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory) -> Path:
    """Two classes of small generated videos (one mpeg4 in AVI), plus an unlabelled flat file."""
    root = tmp_path_factory.mktemp("labelled")
    for i in range(3):
        write_video(root / "left" / f"v{i}.mp4", frames=20 + 4 * i, seed=i)
        write_video(root / "right" / f"w{i}.mp4", frames=24, fps=30, seed=10 + i)
    write_video(root / "right" / "m.avi", frames=30, codec="mpeg4", seed=99)
    return root


@pytest.fixture(scope="module")
def real_and_bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realbad")
    copy_real_videos(root / "real")
    write_bad_files(root / "bad", root / "real" / "cup.mp4")
    return root


@pytest.fixture(scope="module")
def real_and_bad_shards(real_and_bad, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out") / "mixed"
    cfg = JobConfig(input=str(real_and_bad), name="mixed", short_side=64, max_fail_frac=0.5, shard_samples=3)
    summary = run_job(cfg, out, workers=2, progress=False)
    return out, summary.manifest


def test_every_input_is_in_a_shard_or_in_failures(real_and_bad, real_and_bad_shards):
    out, manifest = real_and_bad_shards
    inputs = {v.source for v in list_inputs(real_and_bad)}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    failed = {f["path"] for f in failures}
    sampled = {json.loads(s["json"])["source"] for s in read_samples(out)}
    assert sampled | failed == inputs
    assert not sampled & failed
    assert manifest["num_inputs"] == len(inputs) == manifest["num_ok"] + manifest["num_failed"]
    reasons = {Path(f["path"]).stem: f["reason"] for f in failures}
    assert reasons["empty"] == "empty file"
    assert reasons["text"].startswith("not a readable video")
    assert reasons["audio_only"].startswith("no video stream")
    # every real sample video (six codecs and containers) is transcoded
    assert {f"real/{n}" for n in REAL_VIDEOS} <= sampled


def test_partly_decodable_file_keeps_what_decodes(real_and_bad_shards):
    out, manifest = real_and_bad_shards
    metas = [json.loads(s["json"]) for s in read_samples(out)]
    tree = [m for m in metas if m["source"] == "real/tree.avi"]
    assert len(tree) == 1
    assert tree[0]["source_frames_header"] == 444
    assert tree[0]["source_frames_decoded"] == 68
    assert manifest["partly_decoded"] >= 1


def test_payloads_decode_to_recorded_frames_and_size(real_and_bad_shards):
    out, manifest = real_and_bad_shards
    samples = read_samples(out)
    assert len(samples) == manifest["num_samples"]
    for s in samples:
        meta = json.loads(s["json"])
        assert s["__key__"] == meta["key"]
        frames = list(av.open(io.BytesIO(s["webm"])).decode(video=0))
        assert len(frames) == meta["frames"]
        assert (frames[0].width, frames[0].height) == (meta["width"], meta["height"])
        assert min(meta["width"], meta["height"]) == 64
        assert meta["width"] % 2 == 0 and meta["height"] % 2 == 0


def test_keyframes_every_gop_frames(real_and_bad_shards):
    out, manifest = real_and_bad_shards
    sample = max(read_samples(out), key=lambda s: json.loads(s["json"])["frames"])
    n = json.loads(sample["json"])["frames"]
    keyframes = [p.is_keyframe for p in av.open(io.BytesIO(sample["webm"])).demux(video=0) if p.size]
    assert sum(keyframes) == -(-n // manifest["gop"])


def test_dali_reads_shards_with_our_index(real_and_bad_shards):
    from nvidia.dali import fn, pipeline_def

    out, manifest = real_and_bad_shards
    paths = [str(out / s["path"]) for s in manifest["shards"]]
    index = [str(out / s["index"]) for s in manifest["shards"]]

    @pipeline_def(batch_size=manifest["num_samples"], num_threads=1, device_id=None)
    def pipe():
        video, meta = fn.readers.webdataset(paths=paths, index_paths=index, ext=["webm", "json"],
                                            missing_component_behavior="error", name="reader")
        return fn.decoders.video(video, device="cpu", sequence_length=4), meta

    p = pipe()
    p.build()
    assert p.epoch_size("reader") == manifest["num_samples"]
    frames, metas = p.run()
    keys = [json.loads(bytes(metas.at(i)))["key"] for i in range(len(metas))]
    assert keys == sorted(keys)
    for i in range(len(frames)):
        meta = json.loads(bytes(metas.at(i)))
        assert frames.at(i).shape == (4, meta["height"], meta["width"], 3)


def test_labels_from_folders_and_class_file(labelled_dir, tmp_path):
    out = tmp_path / "lab"
    manifest = run_job(JobConfig(input=str(labelled_dir), name="lab", short_side=32), out,
                       progress=False).manifest
    assert manifest["classes"] == ["left", "right"]
    for s in read_samples(out):
        meta = json.loads(s["json"])
        assert int(s["cls"]) == manifest["classes"].index(meta["label"]) == meta["label_index"]


def test_manifest_inputs_csv_and_jsonl(labelled_dir, tmp_path):
    files = sorted(p for p in labelled_dir.rglob("*") if p.is_file())[:3]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\n" + "".join(f"{p},c{i % 2}\n" for i, p in enumerate(files)))
    jsonl_path = tmp_path / "list.jsonl"
    jsonl_path.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in files))
    m_csv = run_job(JobConfig(input=str(csv_path), name="c", short_side=32), tmp_path / "c", progress=False).manifest
    m_jsonl = run_job(JobConfig(input=str(jsonl_path), name="j", short_side=32), tmp_path / "j",
                      progress=False).manifest
    assert m_csv["num_samples"] == m_jsonl["num_samples"] == 3
    assert m_csv["classes"] == ["c0", "c1"] and m_jsonl["classes"] == []
    # payloads do not depend on how the input was listed
    assert [s["webm"] for s in read_samples(tmp_path / "c")] == [s["webm"] for s in read_samples(tmp_path / "j")]


def test_fps_resampling_and_clip_cutting(labelled_dir, tmp_path):
    out = tmp_path / "clips"
    cfg = JobConfig(input=str(labelled_dir / "right"), name="clips", short_side=32, fps="15",
                    clip_seconds=0.5, min_frames=4)
    run_job(cfg, out, progress=False)
    metas = sorted((json.loads(s["json"]) for s in read_samples(out)), key=lambda m: m["key"])
    by_source: dict[str, list] = {}
    for m in metas:
        by_source.setdefault(m["source"], []).append(m)
    # 24 frames at 30 fps = 0.8 s -> 12 frames at 15 fps -> clips of 8 and 4 frames
    clips = by_source["w0.mp4"]
    assert [c["frames"] for c in clips] == [8, 4]
    assert [c["clip_start_frame"] for c in clips] == [0, 8]
    assert clips[1]["clip_start"] == pytest.approx(8 / 15)
    assert all(m["fps"] == 15.0 for m in metas)


def test_same_payloads_whatever_the_worker_count(labelled_dir, tmp_path):
    cfg = JobConfig(input=str(labelled_dir), name="det", short_side=32, shard_samples=2)
    run_job(cfg, tmp_path / "w1" / "det", workers=1, progress=False)
    run_job(cfg, tmp_path / "w2" / "det", workers=2, progress=False)
    d1, d2 = tar_digests(tmp_path / "w1" / "det"), tar_digests(tmp_path / "w2" / "det")
    assert len(d1) == 4 and d1 == d2


def test_resume_after_interruption_matches_a_clean_run(labelled_dir, tmp_path, monkeypatch):
    cfg = JobConfig(input=str(labelled_dir), name="res", short_side=32, shard_samples=2)
    run_job(cfg, tmp_path / "ref" / "res", progress=False)

    calls = {"n": 0}
    original = Journal.write_segment

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second shard is renamed into place, but its record never lands
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "run" / "res"
    monkeypatch.setattr(Journal, "write_segment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, out, progress=False)
    monkeypatch.setattr(Journal, "write_segment", original)
    assert not (out / "manifest.json").exists()
    assert len(Journal(out / ".journal").segments()) == 1

    summary = run_job(cfg, out, progress=False)
    assert summary.resumed_shards == 1
    assert tar_digests(out) == tar_digests(tmp_path / "ref" / "res")
    assert summary.manifest["num_samples"] == 7
    # a finished job run again changes nothing
    again = run_job(cfg, out, progress=False)
    assert again.resumed_shards == summary.manifest["num_shards"]
    assert tar_digests(out) == tar_digests(tmp_path / "ref" / "res")


def test_kill_9_leaves_no_false_shard_and_rerun_completes(real_and_bad, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dataprep.shards", "--input", str(real_and_bad / "real"), "--out", str(out),
           "--short-side", "128", "--shard-samples", "1", "--clip-seconds", "2", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / ".journal").glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "job finished before it could be killed"
    recorded = {json.loads(p.read_text())["shard"]["path"] for p in (out / ".journal").glob("shard-*.json")}
    # every file that looks like a finished shard is complete and recorded, or is the one being renamed
    unrecorded = {p.name for p in out.glob("*.tar")} - recorded
    assert len(unrecorded) <= 1
    for name in recorded:
        assert (out / name).with_suffix(".idx").exists()

    assert main(cmd[3:]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    ref = run_job(JobConfig(input=str(real_and_bad / "real"), name="killed", short_side=128, shard_samples=1,
                            clip_seconds=2.0), tmp_path / "ref" / "killed", progress=False).manifest
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert not list(out.glob(".*.partial"))


def test_changed_options_refuse_to_resume(labelled_dir, tmp_path):
    out = tmp_path / "opt"
    run_job(JobConfig(input=str(labelled_dir), name="opt", short_side=32), out, progress=False)
    with pytest.raises(JobError, match="short_side: 32 -> 48"):
        run_job(JobConfig(input=str(labelled_dir), name="opt", short_side=48), out, progress=False)
    m = run_job(JobConfig(input=str(labelled_dir), name="opt", short_side=48), out, overwrite=True,
                progress=False).manifest
    assert m["frame_sizes"] == {"64x48": 7}  # the sources are 64x48: short side 48


def test_failure_budget_sets_exit_code(real_and_bad, tmp_path, capsys):
    args = ["--input", str(real_and_bad / "bad"), "--short-side", "32", "--quiet", "--workers", "1"]
    # 5 broken inputs of which the bit-flipped one may still decode: at least 4 of 5 fail
    assert main(args + ["--out", str(tmp_path / "strict"), "--max-fail-frac", "0.05"]) == 1
    err = capsys.readouterr().err
    assert "more than --max-fail-frac 0.05" in err
    failures = (tmp_path / "strict" / "failures.jsonl").read_text().splitlines()
    assert len(failures) >= 1
    assert main(args + ["--out", str(tmp_path / "lenient"), "--max-fail-frac", "1.0"]) == 0
    lenient = json.loads((tmp_path / "lenient" / "manifest.json").read_text())
    assert lenient["num_failed"] >= 4 and lenient["num_inputs"] == 5


def test_no_inputs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no video files found" in capsys.readouterr().err


def test_parts_then_merge_equal_a_single_job(labelled_dir, tmp_path):
    single = run_job(JobConfig(input=str(labelled_dir), name="set", short_side=32), tmp_path / "one" / "set",
                     progress=False).manifest
    out = tmp_path / "parts" / "set"
    for k in range(3):
        run_job(JobConfig(input=str(labelled_dir), name="set", short_side=32, part=k, num_parts=3), out,
                progress=False)
    merged = merge_parts(out)
    assert merged["num_samples"] == single["num_samples"] == 7
    assert merged["num_inputs"] == single["num_inputs"]
    assert merged["classes"] == single["classes"]
    assert merged["total_input_seconds"] == pytest.approx(single["total_input_seconds"])
    assert [s["path"] for s in merged["shards"]] == [f"set-p{k:04d}-000000.tar" for k in range(3)]
    one = {s["__key__"]: s["webm"] for s in read_samples(tmp_path / "one" / "set")}
    many = {s["__key__"]: s["webm"] for s in read_samples(out)}
    assert one == many


def test_merge_refuses_missing_parts(labelled_dir, tmp_path):
    out = tmp_path / "set"
    run_job(JobConfig(input=str(labelled_dir), name="set", short_side=32, part=0, num_parts=2), out, progress=False)
    with pytest.raises(JobError, match=r"parts \[1\] of 2 have not finished"):
        merge_parts(out)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(JobError, match="short-side"):
        JobConfig(input=".", name="x", short_side=33).validate()
    with pytest.raises(ValueError, match="unknown codec"):
        JobConfig(input=".", name="x", codec="theora").validate()
    with pytest.raises(SystemExit):
        shards_mod.build_parser().parse_args(["--part", "3/2"])
