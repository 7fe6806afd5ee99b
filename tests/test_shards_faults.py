"""Shard-job faults: no fork after threads, hung and crashing workers, every file accounted for, a full
disk, stop signals and a killed parent — each checked for what was kept and what was lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import slow_work
from test_shards import read_samples, tar_digests
from videos import copy_real_videos, write_audio_only, write_video

from dataprep import shard_job
from dataprep import shards as shards_mod
from dataprep.pool import TaskLost, WorkerPool
from dataprep.shard_job import JobConfig, JobError, TimeBudget, run_job
from dataprep.shards import main
from salt.interrupt import EXIT_STOPPED
from salt.processes import START_METHOD

REPO = Path(__file__).resolve().parents[1]


def wait_for(condition, seconds: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for i in range(4):
        write_video(root / f"v{i}.mp4", frames=24, seed=i)
    return root


# ---------------------------------------------------------------- worker processes


def test_pools_spawn_and_never_fork():
    assert START_METHOD == "spawn"
    with WorkerPool(1) as pool:
        assert list(pool.ordered_map(slow_work.start_method, [0], timeout=lambda _: 60.0)) == ["spawn"]


def test_shard_job_finishes_from_a_process_running_torch_and_dali_threads(small_dir, tmp_path):
    """Forking such a process deadlocked the suite once; the job's workers are spawned instead."""
    script = textwrap.dedent(f"""
        import threading, torch
        from nvidia.dali import fn, pipeline_def
        from dataprep.shard_job import JobConfig, run_job

        torch.set_num_threads(2)
        stop = threading.Event()
        def busy():
            a = torch.randn(256, 256)
            while not stop.is_set():
                a = (a @ a).tanh()
        threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()

        @pipeline_def(batch_size=2, num_threads=2, device_id=None)
        def noise():
            return fn.random.uniform(range=(0.0, 1.0), shape=(64, 64))
        pipe = noise()
        pipe.build()
        pipe.run()
        summary = run_job(JobConfig(input={str(small_dir)!r}, name="threads", short_side=32),
                          __import__("pathlib").Path({str(tmp_path / "threads")!r}), workers=2, progress=False)
        stop.set()
        for t in threads:  # torch threads still running at interpreter exit would abort it
            t.join()
        del pipe
        print("samples", summary.manifest["num_samples"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "samples 4" in proc.stdout


def test_a_task_past_its_budget_is_killed_and_the_rest_go_on():
    with WorkerPool(2) as pool:
        out = list(pool.ordered_map(slow_work.sleep_then_echo, [0.0, 60.0, 0.1, 0.0],
                                    timeout=lambda s: 2.0 if s > 10 else 30.0))
    assert out[0] == 0.0 and out[2] == 0.1 and out[3] == 0.0
    assert isinstance(out[1], TaskLost) and out[1].kind == "timeout" and out[1].item == 60.0


def test_a_task_that_kills_its_worker_is_reported_alone():
    with WorkerPool(2) as pool:
        out = list(pool.ordered_map(slow_work.die_if_odd, [0, 7, 2, -11], timeout=lambda _: 120.0))
    assert out[0] == 0 and out[2] == 2
    assert isinstance(out[1], TaskLost) and out[1].kind == "crashed" and "exit code 7" in out[1].detail
    assert isinstance(out[3], TaskLost) and out[3].kind == "crashed" and "exit code -11" in out[3].detail


def test_time_budget_scales_with_duration():
    b = TimeBudget()
    assert b.transcode(10.0) == b.minimum + 10 * b.per_second
    assert b.transcode(None) == 10 * b.minimum
    assert TimeBudget(fixed=5).transcode(1000.0) == 5 and TimeBudget(fixed=5).probe() == 5


def test_a_hung_transcode_is_recorded_as_timeout_and_the_job_goes_on(small_dir, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for p in small_dir.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (src / "v1_hang.mp4").write_bytes((small_dir / "v1.mp4").read_bytes())
    monkeypatch.setattr(shard_job, "_work", slow_work.hang_on_named)
    cfg = JobConfig(input=str(src), name="hung", short_side=32, max_fail_frac=0.5)
    summary = run_job(cfg, tmp_path / "hung", workers=2, progress=False, budget=TimeBudget(fixed=4.0))
    m = summary.manifest
    assert m["num_ok"] == 4 and m["num_failed"] == 1
    (failure,) = [json.loads(x) for x in (tmp_path / "hung" / "failures.jsonl").read_text().splitlines()]
    assert failure["path"] == "v1_hang.mp4" and failure["reason"].startswith("timeout: transcode")
    assert m["failure_reasons"] == {"timeout": 1}


# ---------------------------------------------------------------- every input accounted for


def test_folder_scan_decides_by_content_and_names_every_file(small_dir, tmp_path):
    src = tmp_path / "mixed"
    (src / "cls").mkdir(parents=True)
    (src / "cls" / "a.mp4").write_bytes((small_dir / "v0.mp4").read_bytes())
    write_video(src / "cls" / "camera.mts", frames=24, codec="mpeg2video", seed=3)  # MPEG-TS, by content
    write_video(src / "cls" / "raw.avi", frames=24, codec="mpeg4", seed=4).rename(src / "cls" / "raw.weird")
    write_audio_only(src / "cls" / "audio_only.m4a")
    (src / "cls" / "notes.txt").write_text("camera notes\n")
    (src / "labels.csv").write_text("path,label\n")
    (src / "cls" / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    (src / "cls" / "blob.bin").write_bytes(os.urandom(4096))
    (src / ".DS_Store").write_bytes(b"\0" * 64)
    (src / "cls" / "broken.mp4").write_bytes(b"not a video at all" * 20)
    os.symlink(src / "missing.mp4", src / "cls" / "dangling.mp4")
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() or p.is_symlink()}

    summary = run_job(JobConfig(input=str(src), name="mixed", short_side=32, max_fail_frac=1.0), tmp_path / "o",
                      workers=2, progress=False)
    m = summary.manifest
    sharded = {json.loads(s["json"])["source"] for s in read_samples(tmp_path / "o")}
    failures = {f["path"]: f["reason"] for f in map(json.loads, (tmp_path / "o" / "failures.jsonl").read_text()
                                                    .splitlines())}
    skipped = {f["path"]: f["reason"] for f in m["skipped"]}
    assert sharded == {"cls/a.mp4", "cls/camera.mts", "cls/raw.weird"} and m["num_ok"] == 3
    assert set(failures) == {"cls/broken.mp4"}
    assert skipped["cls/dangling.mp4"] == "broken link"
    assert skipped["cls/audio_only.m4a"].startswith("not a video: no video stream (only audio)")
    assert skipped["cls/notes.txt"] == skipped["cls/subs.srt"].replace(".srt", ".txt") == "sidecar file (.txt)"
    assert skipped["labels.csv"] == "sidecar file (.csv)" and skipped[".DS_Store"] == "hidden file"
    assert skipped["cls/blob.bin"].startswith("not a video:")
    assert set(failures) | set(skipped) | sharded == files
    assert m["num_files_seen"] == len(files) == m["num_ok"] + m["num_failed"] + m["num_skipped"]
    text = summary.format()
    assert "cls/audio_only.m4a: not a video" in text and "cls/broken.mp4: not a readable video" in text


def test_skipped_files_survive_a_resume(small_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in small_dir.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    write_audio_only(src / "v1b.m4a")
    cfg = JobConfig(input=str(src), name="r", short_side=32, shard_samples=1)
    ref = run_job(cfg, tmp_path / "ref" / "r", progress=False).manifest
    out = tmp_path / "run" / "r"
    run_job(cfg, out, progress=False)
    for p in sorted((out / ".journal").glob("shard-*.json"))[2:]:
        p.unlink()
    (out / ".journal" / "end.json").unlink()
    again = run_job(cfg, out, progress=False).manifest
    assert again["skipped"] == ref["skipped"] and len(ref["skipped"]) == 1
    assert again["num_files_seen"] == ref["num_files_seen"] == 5


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs (root on Linux can mount one); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mnt)], capture_output=True)
    if rc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {rc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(tiny_disk, tmp_path, capsys):
    src = tmp_path / "real"
    copy_real_videos(src, ("cup.mp4", "box.mp4"))
    args = ["--input", str(src), "--short-side", "128", "--shard-samples", "1", "--clip-seconds", "2",
            "--workers", "1", "--quiet"]
    ref = tmp_path / "ref" / "full"
    assert main(args + ["--out", str(ref)]) == 0
    sizes = sorted(p.stat().st_size for p in ref.glob("*.tar"))
    filler = tiny_disk / "filler"
    # leave room for the journal and the first shards, not for all of them
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    filler.write_bytes(b"\0" * (free - sum(sizes[:2]) - 96 * 1024))
    out = tiny_disk / "full"
    capsys.readouterr()
    assert main(args + ["--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on device" in err[0] and str(out) in err[0], err
    assert "Traceback" not in "".join(err)
    assert not list(out.glob(".*.partial")), "a half-written shard was left behind"
    journal = sorted((out / ".journal").glob("shard-*.json"))
    for rec in journal:  # every recorded shard is whole
        shard = json.loads(rec.read_text())["shard"]
        assert (out / shard["path"]).stat().st_size == shard["bytes"]
    filler.unlink()
    assert main(args + ["--out", str(out)]) == 0
    assert tar_digests(out) == tar_digests(ref)


def test_write_error_in_the_shard_writer_names_the_shard(small_dir, tmp_path, monkeypatch):
    import webdataset as wds

    def full(self, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wds.TarWriter, "write", full)
    with pytest.raises(JobError, match=r"cannot write .*w-000000\.tar: no space left on device"):
        run_job(JobConfig(input=str(small_dir), name="w", short_side=32), tmp_path / "w", progress=False)
    assert not list((tmp_path / "w").glob(".*.partial"))


# ---------------------------------------------------------------- stop signals and a killed parent


def _job(src: Path, out: Path, workers: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dataprep.shards", "--input", str(src), "--out", str(out), "--short-side", "128",
           "--shard-samples", "1", "--clip-seconds", "1", "--workers", str(workers), "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _workers_of(pid: int) -> list[psutil.Process]:
    wait_for(lambda: len(psutil.Process(pid).children()) >= 2, what="worker processes")
    return psutil.Process(pid).children(recursive=True)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    copy_real_videos(root, ("cup.mp4", "box.mp4", "Megamind.avi"))
    return root


SIG_ARGS = ["--short-side", "128", "--shard-samples", "1", "--clip-seconds", "1", "--workers", "2", "--quiet"]


@pytest.fixture(scope="module")
def real_ref(real_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "sig"
    assert main(["--input", str(real_dir), "--out", str(out), *SIG_ARGS]) == 0
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_keeps_finished_shards_and_stops_the_workers(real_dir, real_ref, tmp_path, sig):
    out = tmp_path / "sig"
    proc = _job(real_dir, out)
    workers = _workers_of(proc.pid)
    wait_for(lambda: len(list((out / ".journal").glob("shard-*.json"))) >= 2, what="two finished shards")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_STOPPED, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {sig.name}: ") and "rerun" in lines[0], lines
    wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
             seconds=30, what="the workers to exit")
    assert not (out / "manifest.json").exists() and not list(out.glob(".*.partial"))
    assert main(["--input", str(real_dir), "--out", str(out), *SIG_ARGS]) == 0
    assert tar_digests(out) == tar_digests(real_ref)


def test_workers_exit_when_the_job_is_killed(real_dir, tmp_path):
    proc = _job(real_dir, tmp_path / "k9")
    workers = _workers_of(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
             seconds=30, what="orphaned workers to exit")


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize("flag, value, words", [
    ("--fps", "abc", "argument --fps: expected a frame rate"),
    ("--workers", "0", "argument --workers: expected an integer >= 1"),
    ("--shard-samples", "-1", "argument --shard-samples: expected an integer >= 0"),
    ("--video-timeout", "soon", "argument --video-timeout"),
    ("--part", "3/2", "argument --part: 3/2: need 0 <= K < N"),
])
def test_bad_flags_name_the_flag(flag, value, words, capsys):
    with pytest.raises(SystemExit) as e:
        shards_mod.build_parser().parse_args(["--input", "x", "--out", "y", flag, value])
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_info_without_a_manifest_is_one_line(tmp_path, capsys):
    assert main(["--info", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} holds no shard set: manifest.json is missing"]


def test_verify_names_a_damaged_shard(small_dir, tmp_path, capsys):
    out = tmp_path / "v"
    run_job(JobConfig(input=str(small_dir), name="v", short_side=32, shard_samples=2), out, progress=False)
    assert main(["--verify", str(out)]) == 0
    assert "all shards intact" in capsys.readouterr().out
    shard = out / "v-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    assert main(["--verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "v-000001.tar" in err and "v-000000.tar" not in err


def test_a_stop_while_a_shard_is_being_opened_leaves_no_partial_file(tmp_path, monkeypatch):
    """A stop signal raised inside the writer's constructor (the partial file already open, the writer not yet
    held by the job) must not leave the partial file behind when the job aborts."""
    from dataprep import tarshard

    class Output:
        local = tmp_path

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarshard.wds, "TarWriter", stopped)
    state = shard_job._WriterState(Output(), "sig", journal=None, number=4)
    with pytest.raises(KeyboardInterrupt):
        state.add("key", {"json": b"{}"})
    assert [p.name for p in tmp_path.iterdir()] == [".sig-000004.tar.partial"]  # what the stop left
    state.abort()
    assert list(tmp_path.iterdir()) == []
