"""Shard sets on object storage and web servers: the loaders read the same batches from
`s3://bucket/name` (an S3-compatible server on 127.0.0.1) and `http://127.0.0.1:PORT/name` (a server
that honours byte ranges) as from the local copy, fetching samples by their index's byte ranges."""

from __future__ import annotations

import re

import pytest
import torch
from test_loader import LOADERS, config

from benchmarks.local_servers import range_http_server, s3_configured, s3_server, upload
from salt.data.shardset import ShardSet, ShardSetError


def batches(kind: str, root: str, n: int = 3) -> list:
    with LOADERS[kind](config(root, views_per_clip=1)) as loader:
        out = []
        for b in loader:
            out.append((b.keys, b.video.clone(), b.labels.clone()))
            if len(out) == n:
                break
    return out


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (ka, va, la), (kb, vb, lb) in zip(a, b, strict=True):
        assert ka == kb and torch.equal(la, lb) and torch.equal(va, vb)


@pytest.fixture(scope="module")
def s3_shards(synth_shards, tmp_path_factory):
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with s3_server(log) as endpoint, s3_configured(endpoint):
        upload(endpoint, synth_shards, "salt-shards", "synth")
        yield "s3://salt-shards/synth", log


@pytest.fixture(scope="module")
def http_shards(synth_shards, tmp_path_factory):
    log = tmp_path_factory.mktemp("http") / "server.log"
    with range_http_server(synth_shards.parent, log) as url:
        yield f"{url}/{synth_shards.name}", log


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_loader_reads_the_same_batches_from_s3(kind, s3_shards, synth_shards):
    url, _ = s3_shards
    assert_same(batches(kind, url), batches(kind, str(synth_shards)))


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_loader_reads_the_same_batches_over_https_ranges(kind, http_shards, synth_shards):
    url, log = http_shards
    assert_same(batches(kind, url), batches(kind, str(synth_shards)))
    # samples come by range requests (206 Partial Content), not whole-shard downloads
    assert re.search(r'"GET /synth/synth-\d+\.tar HTTP/1\.1" 206', log.read_text())


def test_remote_shard_set_is_the_local_one(s3_shards, synth_shards):
    url, _ = s3_shards
    remote, local = ShardSet(url), ShardSet(synth_shards)
    assert remote.keys == local.keys and remote.manifest == local.manifest
    assert all(remote.video_bytes(i) == local.video_bytes(i) for i in (0, 7, len(local) - 1))
    remote.check_shard(0)  # the whole-file hash streams from the server and matches the manifest


def test_missing_remote_shard_set_is_one_clear_error(s3_shards):
    with pytest.raises(ShardSetError, match=r"no shard set at s3://salt-shards/nothing: manifest.json is missing"):
        ShardSet("s3://salt-shards/nothing")
