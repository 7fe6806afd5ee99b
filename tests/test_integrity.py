"""Data integrity: damage that keeps a file's size (cache files and shards) is found by the full checks and
refused by the readers, naming the file; a full disk while the cache job writes is one line and exit 1;
SIGTERM/SIGINT stop the cache job at a batch boundary with exit 75. In every case the finished files and
meta.json stay valid and a rerun of the same command gives the bytes of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import cpu_ranks_env, group_gone
from test_targets import GEOMETRY, MICRO, REPO, make_teacher, precompute

from dataprep.targets import main as targets_main
from salt import atomic
from salt.atomic import file_sha256
from salt.data.config import LoaderConfig
from salt.data.shardset import ShardIntegrityError, ShardSet, verify_shard_set
from salt.targets import job as targets_job
from salt.targets import writer as targets_writer
from salt.targets.format import TargetCacheDamaged, TargetCacheError
from salt.targets.reader import TargetCache
from salt.train import main as train_main

STOPPED = 75  # salt.interrupt.EXIT_STOPPED: stopped early by a signal, resumable
FILES = [f"synth-00000{i}.arrow" for i in range(5)]
SMALL_BATCHES = ("--batch-size", "2")  # 7-sample shards take 4 batches: a stop always leaves one file open


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher") / "a", 0)


@pytest.fixture(scope="module")
def reference(teacher, synth_shards, tmp_path_factory):
    """(dtype, loader) -> an uninterrupted cache made with SMALL_BATCHES."""
    root, made = tmp_path_factory.mktemp("reference"), {}

    def get(dtype: str = "fp32", loader: str = "dali") -> Path:
        if (dtype, loader) not in made:
            out = root / f"{dtype}-{loader}"
            assert precompute(teacher, synth_shards, out, dtype, *SMALL_BATCHES, "--loader", loader) == 0
            made[dtype, loader] = out
        return made[dtype, loader]

    return get


def flip_bytes(path: Path, n: int = 64) -> None:
    """Inverts n bytes in the middle of a file; its size stays the same."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        data = f.read(n)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == size


def same_cache(out: Path, ref: Path) -> None:
    for name in FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert json.loads((out / "meta.json").read_text()) == json.loads((ref / "meta.json").read_text())
    assert not list(out.glob(".*.partial"))


# ---------------------------------------------------------------- damage that keeps the size


def test_cache_files_record_their_sha256(reference):
    out = reference()
    meta = json.loads((out / "meta.json").read_text())
    assert [f["file"] for f in meta["files"]] == FILES
    for f in meta["files"]:
        assert f["sha256"] == file_sha256(out / f["file"]) and f["bytes"] == (out / f["file"]).stat().st_size


def test_same_size_damage_in_a_cache_file_is_reported_and_refused(reference, teacher, synth_shards, tmp_path,
                                                                   capsys):
    out = tmp_path / "cache"
    shutil.copytree(reference(), out)
    for name in (FILES[1], FILES[3]):
        flip_bytes(out / name)
    assert targets_main(["--verify", str(out), "--quiet"]) == 1
    report = capsys.readouterr().out
    bad = [line for line in report.splitlines() if "does not match the sha256 recorded in meta.json" in line]
    assert len(bad) == 2 and FILES[1] in bad[0] and FILES[3] in bad[1], report
    assert all(name not in report for name in (FILES[0], FILES[2], FILES[4]))
    assert "3 files match the sha256" in report and report.strip().endswith("2 problem(s)")

    cache = TargetCache(out)  # sizes and footers are fine: it opens
    by_file = {}
    for key, (n, _) in cache.index.items():
        by_file.setdefault(n, key)
    assert cache.read([by_file[0]], [0]).values.shape == (1, 64, 192)
    for _ in range(2):  # the first read hashes and refuses; later reads refuse without hashing again
        with pytest.raises(TargetCacheDamaged, match=rf"cache file \S*{FILES[1]} does not match the sha256 recorded "
                                                     r"in meta.json: damaged or replaced; rebuild it: delete it"):
            cache.read([by_file[0], by_file[1]], [0, 1])
    cache.close()
    unchecked = TargetCache(out, verify=False)  # the flag: no hash, no refusal (what main did before)
    try:
        unchecked.read([by_file[1]], [0])
    except TargetCacheDamaged:  # pragma: no cover - the flag must turn the check off
        pytest.fail("verify=False still hashed")
    except TargetCacheError:
        pass  # the flipped bytes may also break zstd: that error is older than the hash
    unchecked.close()

    # what the message says to do: delete the file and rerun; the rerun restores the same bytes
    (out / FILES[1]).unlink()
    (out / FILES[3]).unlink()
    capsys.readouterr()
    assert precompute(teacher, synth_shards, out, "fp32", *SMALL_BATCHES) == 0
    same_cache(out, reference())


def test_student_run_refuses_a_damaged_cache_naming_the_file(reference, synth_shards, tmp_path, capsys):
    out = tmp_path / "cache"
    shutil.copytree(reference("bf16"), out)
    for name in FILES:
        flip_bytes(out / name)
    common = ["--stage", "student", "--shards", str(synth_shards), "--steps", "2", f"--targets.cache={out}",
              "--run-dir", str(tmp_path / "run")]
    assert train_main(MICRO + common) == 1
    err = capsys.readouterr().err
    assert "error: cache file " in err and "does not match the sha256 recorded in meta.json" in err, err
    assert "Traceback" not in err


def test_cache_without_hashes_opens_with_one_warning_and_a_rerun_records_them(reference, teacher, synth_shards,
                                                                              tmp_path, capsys):
    out = tmp_path / "cache"
    shutil.copytree(reference(), out)
    meta = json.loads((out / "meta.json").read_text())
    for f in meta["files"]:
        del f["sha256"]
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    capsys.readouterr()
    for _ in range(2):
        cache = TargetCache(out)
        cache.read([next(iter(cache.index))], [0])
        cache.close()
    err = capsys.readouterr().err
    assert err.count("records no sha256 for 5 of its 5 files") == 1, err
    assert targets_main(["--verify", str(out), "--quiet"]) == 0
    assert "note: meta.json records no sha256 for 5 files" in capsys.readouterr().out
    before = {n: (out / n).stat().st_mtime_ns for n in FILES}
    assert precompute(teacher, synth_shards, out, "fp32", *SMALL_BATCHES) == 0
    assert {n: (out / n).stat().st_mtime_ns for n in FILES} == before  # hashed, not rewritten
    same_cache(out, reference())


def test_same_size_damage_in_a_shard_is_named_by_verify_and_refused_by_the_loaders(synth_shards, tmp_path):
    from salt.data.dali_loader import DaliVideoLoader
    from salt.data.reference_loader import ReferenceVideoLoader

    assert verify_shard_set(synth_shards) == []
    bad = tmp_path / "shards"
    shutil.copytree(synth_shards, bad)
    flip_bytes(bad / "synth-000001.tar")
    problems = verify_shard_set(bad)
    assert problems == [f"{bad / 'synth-000001.tar'}: does not match the sha256 recorded in manifest.json: "
                        "damaged or replaced"]

    shards = ShardSet(bad)  # sizes are fine: it opens
    assert shards.video_bytes(0)  # shard 0 is intact
    with pytest.raises(ShardIntegrityError, match=r"shard \S*synth-000001.tar does not match the sha256 recorded in "
                                                  r"manifest.json: damaged or replaced"):
        shards.video_bytes(7)
    with pytest.raises(ShardIntegrityError):  # remembered: refused again without hashing again
        shards.meta(8)
    shards.close()
    assert ShardSet(bad, verify=False).video_bytes(7)  # the flag: sizes only

    cfg = LoaderConfig(shards=str(bad), batch_size=4, num_frames=8, crop_size=32, threads=1, mode="eval")
    for loader_cls in (DaliVideoLoader, ReferenceVideoLoader):  # eval mode reads the shards in order
        with pytest.raises(ShardIntegrityError) as e, loader_cls(cfg) as loader:
            for _ in loader:
                pass
        msg = str(e.value)
        assert "synth-000001.tar does not match the sha256" in msg and "\n" not in msg, msg  # one line, no traceback


def test_verify_shard_set_names_truncated_shards_and_damaged_indexes(synth_shards, tmp_path):
    bad = tmp_path / "shards"
    shutil.copytree(synth_shards, bad)
    tar = bad / "synth-000002.tar"
    tar.write_bytes(tar.read_bytes()[:-512])
    idx = bad / "synth-000003.idx"
    lines = idx.read_text().splitlines()
    parts = lines[2].split()
    parts[1] = str(int(parts[1]) + 512)  # the second sample's first component, one block off
    idx.write_text("\n".join([*lines[:2], " ".join(parts), *lines[3:]]) + "\n")
    (bad / "synth-000004.idx").unlink()
    problems = verify_shard_set(bad)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{tar}: ") and "truncated or replaced" in problems[0]
    assert problems[1].startswith(f"{idx}: does not match synth-000003.tar (first difference at sample ")
    assert problems[2] == f"{bad / 'synth-000004.idx'}: listed in manifest.json but missing"
    assert verify_shard_set(tmp_path / "nothing") == [f"{tmp_path / 'nothing' / 'manifest.json'} is missing: "
                                                      "not a shard set"]


# ---------------------------------------------------------------- a full disk


class _FullDisk:
    """Stands in for an Arrow file writer whose disk fills after `ok` batches."""

    def __init__(self, writer, ok: int):
        self._writer, self._ok = writer, ok

    def write_batch(self, *args, **kwargs):
        if self._ok == 0:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        self._ok -= 1
        self._writer.write_batch(*args, **kwargs)

    def close(self):
        self._writer.close()


@pytest.mark.parametrize("target", ["arrow", "meta"])
def test_full_disk_is_one_line_and_a_rerun_resumes(target, reference, teacher, synth_shards, tmp_path, monkeypatch,
                                                   capsys):
    out = tmp_path / "cache"
    victim = out / FILES[2]
    if target == "arrow":  # the third cache file cannot be written past its third row
        real_init = targets_writer.ShardTargetWriter.__init__

        def init(self, out_dir, shard_name, *args, **kwargs):
            real_init(self, out_dir, shard_name, *args, **kwargs)
            if shard_name == "synth-000002.tar":
                self._writer = _FullDisk(self._writer, ok=3)

        monkeypatch.setattr(targets_writer.ShardTargetWriter, "__init__", init)
        culprit = victim
    else:  # meta.json cannot be rewritten when the third file is recorded (salt.atomic's own write fails)
        real_record, real_fsync = targets_job.record_file, os.fsync

        def full_fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".meta.json.partial"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        def record_file(out_dir, meta, summary):
            if summary["file"] != FILES[2]:
                return real_record(out_dir, meta, summary)
            with monkeypatch.context() as m:
                m.setattr(atomic.os, "fsync", full_fsync)
                return real_record(out_dir, meta, summary)

        monkeypatch.setattr(targets_job, "record_file", record_file)
        culprit = out / "meta.json"
    capsys.readouterr()
    assert precompute(teacher, synth_shards, out, "fp32", *SMALL_BATCHES) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write {culprit}: no space left on device\n"
    monkeypatch.undo()

    assert sorted(p.name for p in out.glob("*.arrow")) == FILES[:2]  # finished files stay
    assert not list(out.glob(".*.partial"))  # the partial file is gone
    meta = json.loads((out / "meta.json").read_text())  # meta.json is whole: the last good version
    assert meta["complete"] is False
    assert [f.get("sha256") for f in meta["files"]] == [file_sha256(out / n) for n in FILES[:2]] + [None] * 3
    with pytest.raises(TargetCacheError, match=r"incomplete \(2 of 5 files\)"):
        TargetCache(out)
    assert precompute(teacher, synth_shards, out, "fp32", *SMALL_BATCHES) == 0  # space freed: resume
    assert "3 files written, 2 already done" in capsys.readouterr().out
    same_cache(out, reference())


# ---------------------------------------------------------------- SIGTERM / SIGINT

# Runs the job as `python -m dataprep.targets` does, with one sample's write held back until the job has
# seen the signal: the stop then happens while that sample's shard is half written, every time.
HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from salt.targets import writer as targets_writer
    from dataprep.targets import main

    HOLD_AT, MARK = os.environ["SALT_TEST_HOLD_AT"], Path(os.environ["SALT_TEST_MARK"])
    real_add = targets_writer.ShardTargetWriter.add

    def add(self, key, values, scale=None):
        if key == HOLD_AT:
            MARK.write_text(str(os.getpid()))
            flag = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)  # the job's StopFlag
            while not flag:
                time.sleep(0.01)
        real_add(self, key, values, scale)

    if __name__ == "__main__":  # loader workers started by a forkserver import this file too
        targets_writer.ShardTargetWriter.add = add
        sys.exit(main(sys.argv[1:]))
""")


def job_args(teacher: Path, shards: Path, out: Path, loader: str) -> list[str]:
    return ["--teacher", str(teacher), "--shards", str(shards), "--out", str(out), "--views", "2", "--dtype", "fp32",
            "--config", "tiny", *GEOMETRY, "--quiet", *SMALL_BATCHES, "--loader", loader]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the job ended (rc {proc.returncode}) before the signal:\n{out[-2000:]}{err[-3000:]}")
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("signame,loader,to", [("SIGTERM", "dali", "process"), ("SIGINT", "reference", "group")])
def test_signal_stops_the_cache_job_cleanly_and_a_rerun_finishes_it(signame, loader, to, reference, teacher,
                                                                    synth_shards, tmp_path, capsys):
    """SIGTERM to the job (a scheduler), SIGINT to its process group (Ctrl-C, which also reaches the
    reference loader's worker processes)."""
    out, mark = tmp_path / "cache", tmp_path / "held"
    script = tmp_path / "hold.py"
    script.write_text(HOLD.format(repo=str(REPO)))
    hold_at = ShardSet(synth_shards).keys[14]  # the first sample of the third shard
    env = {**os.environ, "SALT_TEST_HOLD_AT": hold_at, "SALT_TEST_MARK": str(mark), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *job_args(teacher, synth_shards, out, loader)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(mark, proc)
        sig = getattr(signal, signame)
        os.killpg(proc.pid, sig) if to == "group" else proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == STOPPED, stdout[-2000:] + stderr[-3000:]
    assert stderr.strip().splitlines() == [f"stopped by {signame}: 2 of 5 files finished; rerun the same command "
                                           "to resume"], stderr[-3000:]
    assert group_gone(proc.pid), "processes of the job outlived it"
    assert sorted(p.name for p in out.glob("*.arrow")) == FILES[:2]
    assert not list(out.glob(".*.partial"))  # the half-written third file was dropped
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] is False and [bool(f.get("sha256")) for f in meta["files"]] == [True] * 2 + [False] * 3

    capsys.readouterr()
    assert targets_main(job_args(teacher, synth_shards, out, loader)) == 0
    assert "3 files written, 2 already done" in capsys.readouterr().out
    same_cache(out, reference("fp32", loader))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_under_the_deepspeed_launcher_leaves_no_process_and_a_rerun_finishes(reference, teacher,
                                                                                      synth_shards, tmp_path):
    """SIGTERM to the launcher's whole process group (what a scheduler does): the launcher terminates its
    ranks, each stops at a batch boundary, drops its open file and exits 75; the launcher itself exits 1."""
    out, mark = tmp_path / "cache", tmp_path / "held"
    script = tmp_path / "hold.py"
    script.write_text(HOLD.format(repo=str(REPO)))
    env = cpu_ranks_env(SALT_TEST_MARK=str(mark),
                        SALT_TEST_HOLD_AT=ShardSet(synth_shards).keys[14])  # shard 2: rank 0's second file
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
           str(29800 + os.getpid() % 1000), str(script), *job_args(teacher, synth_shards, out, "dali")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for(mark, proc, timeout=400)
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)  # the pipe closes when the launcher and every rank are gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert group_gone(proc.pid), "processes of the job outlived it"
    assert "[rank 0/2] stopped by SIGTERM: " in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    done = sorted(p.name for p in out.glob("*.arrow"))
    assert FILES[0] in done and FILES[2] not in done and FILES[4] not in done
    assert not list(out.glob(".*.partial"))
    proc = subprocess.run([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
                           str(29800 + os.getpid() % 1000), "dataprep/targets.py",
                           *job_args(teacher, synth_shards, out, "dali")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    same_cache(out, reference())
