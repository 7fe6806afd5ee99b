"""Jobs that write to object storage (a local S3-compatible server): the shard job (local, --part and
merge) gives the bytes of a local run; nothing half-written is ever visible; a rerun after a kill keeps
the finished objects and aborts unfinished uploads; outputs a job cannot write are refused in one line;
the teacher-target cache job writes to s3:// and the student reads its targets back from there."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import group_gone

from benchmarks.local_servers import S3_ENV, s3_configured, s3_env, s3_server
from dataprep.shard_job import JobConfig, merge_parts, run_job
from dataprep.shards import main as shards_main
from salt.data.output import OutputError, open_output
from salt.data.shardset import ShardSet

REPO = Path(__file__).resolve().parents[1]
BUCKET = "salt-out"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import boto3

    log = tmp_path_factory.mktemp("s3w") / "server.log"
    with s3_server(log) as endpoint, s3_configured(endpoint):
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                              region_name=S3_ENV["AWS_DEFAULT_REGION"])
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client


def objects(client, prefix: str) -> dict[str, dict]:
    """key (below prefix) -> {size, etag, modified} of every object under prefix."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1:]] = {"size": o["Size"], "etag": o["ETag"], "modified": o["LastModified"]}
    return out


def sha(client, key: str) -> str:
    return hashlib.sha256(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


def tar_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def shard_cfg(videos: Path, name: str, **kw) -> JobConfig:
    return JobConfig(input=str(videos), name=name, short_side=32, shard_samples=7, **kw)


@pytest.fixture(scope="module")
def local_run(synth_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "set"
    run_job(shard_cfg(synth_videos, "set"), out, workers=2, progress=False)
    return out


def test_shard_job_to_s3_gives_the_local_bytes(s3, synth_videos, local_run, tmp_path, monkeypatch, capsys):
    _, client = s3
    monkeypatch.chdir(tmp_path)
    assert shards_main(["--input", str(synth_videos), "--out", f"s3://{BUCKET}/set", "--short-side", "32",
                        "--shard-samples", "7", "--workers", "2", "--quiet", "--staging", str(tmp_path / "st")]) == 0
    assert not (tmp_path / "s3:").exists()  # nothing written to a local folder named after the URL
    found = objects(client, "set")
    want = tar_hashes(local_run)
    assert {k for k in found if k.endswith(".tar")} == set(want)
    assert all(sha(client, f"set/{name}") == digest for name, digest in want.items())
    assert {k for k in found if k.endswith(".idx")} == {p.name for p in local_run.glob("*.idx")}
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key="set/manifest.json")["Body"].read())
    assert manifest["shards"] == json.loads((local_run / "manifest.json").read_text())["shards"]
    staged = [p for p in (tmp_path / "st").rglob("*.tar")]
    assert staged == []  # uploaded shards leave the staging folder
    remote = ShardSet(f"s3://{BUCKET}/set")
    assert remote.keys == ShardSet(local_run).keys
    remote.close()


@pytest.mark.parametrize("out, fragment", [("https://example.com/set", "other URLs are read-only"),
                                           ("gs://bucket/set", "jobs write to a folder or to s3://")])
def test_outputs_a_job_cannot_write_are_refused_in_one_line(out, fragment, synth_videos, capsys):
    assert shards_main(["--input", str(synth_videos), "--out", out, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write to") and fragment in err
    with pytest.raises(OutputError):
        open_output(out)


def test_a_missing_bucket_is_one_line(s3, synth_videos, capsys):
    assert shards_main(["--input", str(synth_videos), "--out", "s3://no-such-bucket/set", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bucket no-such-bucket does not exist" in err


def test_parts_to_s3_merge_into_the_local_manifest(s3, synth_videos, local_run, tmp_path):
    _, client = s3
    staging = tmp_path / "st"
    out = f"s3://{BUCKET}/parts"
    local_parts = tmp_path / "parts"
    for k in range(2):
        run_job(shard_cfg(synth_videos, "parts", part=k, num_parts=2), open_output(out, staging), progress=False)
        run_job(shard_cfg(synth_videos, "parts", part=k, num_parts=2), local_parts, progress=False)
    assert "manifest.json" not in objects(client, "parts")  # not before the merge
    remote = merge_parts(open_output(out, staging))
    local = merge_parts(local_parts)
    assert remote == local
    assert {k: sha(client, f"parts/{k}") for k in objects(client, "parts") if k.endswith(".tar")} == \
        tar_hashes(local_parts)


HOLD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from salt.data.output import RemoteOutput
    publish = RemoteOutput.publish
    def held(self, *names):
        publish(self, *names)
        if any(n.endswith("shard-000000.json") for n in names) and "SALT_TEST_MARK" in os.environ:
            open(os.environ["SALT_TEST_MARK"], "w").close()
            time.sleep(3600)  # killed here, once the first shard and its journal record are in the bucket
    RemoteOutput.publish = held
    if __name__ == "__main__":  # transcode workers are spawned: they import this file again
        from dataprep.shards import main
        sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.timeout(600)
def test_a_killed_job_leaves_nothing_half_written_and_a_rerun_finishes_it(s3, synth_videos, local_run, tmp_path):
    endpoint, client = s3
    script, mark = tmp_path / "hold.py", tmp_path / "held"
    script.write_text(HOLD.format(repo=str(REPO)))
    args = ["--input", str(synth_videos), "--out", f"s3://{BUCKET}/killed", "--short-side", "32", "--shard-samples",
            "7", "--quiet", "--staging", str(tmp_path / "st")]
    env = {**os.environ, **s3_env(endpoint), "SALT_TEST_MARK": str(mark), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not mark.exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert group_gone(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # an upload the kill cut short, as it leaves one: never visible, aborted by the rerun
    client.create_multipart_upload(Bucket=BUCKET, Key="killed/killed-000001.tar")
    first = objects(client, "killed")
    assert "manifest.json" not in first  # a reader finds no shard set yet
    assert {k for k in first if k.endswith(".tar")} == {"killed-000000.tar"}
    assert shards_main(args) == 0  # the same command, here: it resumes from the bucket's journal
    after = objects(client, "killed")
    assert after["killed-000000.tar"]["etag"] == first["killed-000000.tar"]["etag"]
    assert after["killed-000000.tar"]["modified"] == first["killed-000000.tar"]["modified"]  # not rewritten
    assert "manifest.json" in after
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix="killed/").get("Uploads", [])
    assert uploads == []
    local = {name.replace("set-", "killed-"): d for name, d in tar_hashes(local_run).items()}
    assert {k: sha(client, f"killed/{k}") for k in after if k.endswith(".tar")} == local


def test_target_cache_to_s3_and_the_student_reads_it_back(s3, synth_shards, tmp_path):
    from test_targets import GEOMETRY, K, make_teacher

    from dataprep.targets import main as targets_main
    from salt.targets.reader import TargetCache
    from salt.train import main as train_main

    _, client = s3
    teacher = make_teacher(tmp_path / "teacher", 0)
    common = ["--teacher", str(teacher), "--shards", str(synth_shards), "--views", str(K), "--dtype", "bf16",
              "--config", "tiny", *GEOMETRY, "--quiet"]
    assert targets_main(common + ["--out", f"s3://{BUCKET}/cache", "--staging", str(tmp_path / "st")]) == 0
    assert targets_main(common + ["--out", str(tmp_path / "local")]) == 0
    found = objects(client, "cache")
    for p in sorted((tmp_path / "local").glob("*.arrow")):
        assert sha(client, f"cache/{p.name}") == hashlib.sha256(p.read_bytes()).hexdigest()
    assert "meta.json" in found
    remote, local = TargetCache(f"s3://{BUCKET}/cache"), TargetCache(tmp_path / "local")
    assert remote.meta.complete and remote.index == local.index
    keys = list(local.index)[:4]
    a, b = remote.read(keys, [0, 1, 0, 1]), local.read(keys, [0, 1, 0, 1])
    assert (a.values == b.values).all()
    remote.close()
    local.close()
    assert targets_main(common + ["--out", f"s3://{BUCKET}/cache", "--staging", str(tmp_path / "st2")]) == 0
    assert objects(client, "cache")["meta.json"]["etag"] == found["meta.json"]["etag"]  # complete: nothing redone
    from test_train import MICRO

    assert train_main(MICRO + ["--stage", "student", "--shards", str(synth_shards), "--steps", "2", "--run-dir",
                               str(tmp_path / "run"), f"--targets.cache=s3://{BUCKET}/cache"]) == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_to_s3_gives_the_local_parts_bytes(s3, synth_videos, tmp_path, monkeypatch):
    """The Ray form: each task stages on its node and uploads its part; the driver merges in the bucket."""
    from dataprep.ray_shards import RayOptions, run_on_ray

    endpoint, client = s3
    for key, value in {**s3_env(endpoint), "SALT_STAGING": str(tmp_path / "st")}.items():
        monkeypatch.setenv(key, value)  # Ray's worker processes inherit them
    summary = run_on_ray(shard_cfg(synth_videos, "rayset"), f"s3://{BUCKET}/rayset",
                         RayOptions(address=None, tasks=2, cpus_per_task=1), progress=False)
    local = tmp_path / "rayset"
    for k in range(2):
        run_job(shard_cfg(synth_videos, "rayset", part=k, num_parts=2), local, progress=False)
    want = merge_parts(local)
    assert summary.manifest == want
    found = objects(client, "rayset")
    assert {k: sha(client, f"rayset/{k}") for k in found if k.endswith(".tar")} == tar_hashes(local)
    assert json.loads(client.get_object(Bucket=BUCKET, Key="rayset/manifest.json")["Body"].read()) == want
