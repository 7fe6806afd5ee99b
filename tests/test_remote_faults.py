"""Remote shard sets read through a fault-injecting proxy (benchmarks/fault_proxy.py) in front of a local
S3-compatible server and an HTTP range server: throttling, a connection reset mid-read, a stall past the
read timeout and a server restart. Each loader (DALI and the reference loader) reads the same batches as
from the local shards, nothing skipped or read twice, with the retries counted; a server that stays down
past the retry budget stops a run with one line and a checkpoint that --resume continues from."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from benchmarks.fault_proxy import fault_proxy
from benchmarks.local_servers import range_http_server, s3_configured, s3_server, upload
from salt.data.config import LoaderConfig
from salt.data.loaders import open_loader
from salt.data.plan import RemoteReadError
from salt.data.shardset import ShardSetError

# short timeouts and a generous budget: a stall is a timeout, a restart of a few seconds is ridden out
RETRY = {"remote_attempts": 10, "remote_timeout_s": 1.5}


@pytest.fixture(scope="module")
def servers(synth_shards, tmp_path_factory):
    """(S3 endpoint, HTTP range server URL), the synthetic shards on both."""
    logs = tmp_path_factory.mktemp("faults")
    with s3_server(logs / "s3.log") as endpoint, range_http_server(synth_shards.parent, logs / "http.log") as http:
        upload(endpoint, synth_shards, "faulty", "synth")
        yield endpoint, http


@pytest.fixture(params=["s3", "http"])
def through_proxy(request, servers, synth_shards):
    """(shard set URL through a fresh proxy, the proxy)."""
    endpoint, http = servers
    if request.param == "s3":
        with fault_proxy(endpoint) as proxy, s3_configured(proxy.url):
            yield "s3://faulty/synth", proxy
    else:
        with fault_proxy(http) as proxy:
            yield f"{proxy.url}/{synth_shards.name}", proxy


def config(shards: str, **kw) -> LoaderConfig:
    return LoaderConfig(shards=shards, batch_size=4, num_frames=8, frame_stride=2, crop_size=32, seed=3, threads=1,
                        **{**RETRY, **kw})


def epoch(cfg: LoaderConfig, kind: str, during=None) -> tuple[list, int]:
    """Every batch of one epoch as (keys, video); `during(i)` runs before batch i is taken."""
    out = []
    with open_loader(cfg, kind) as loader:
        for i, b in enumerate(loader):
            out.append((b.keys, b.video.clone()))
            if during is not None:
                during(i)
        return out, loader.stats.storage_retries


@pytest.fixture(scope="module")
def clean(synth_shards):
    """The batches from the local shard set, per loader: what every faulty run must give."""
    return {kind: epoch(config(str(synth_shards)), kind)[0] for kind in ("dali", "reference")}


def same(a: list, b: list) -> None:
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) > 0
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


FAULTS = {
    "throttled": lambda proxy: proxy.throttle(0.3, status=503),
    "reset": lambda proxy: proxy.reset_next(2),  # s3fs re-reads a cut body up to 3 times
    "stalled": lambda proxy: proxy.stall_next(2, 4.0),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["dali", "reference"])
@pytest.mark.parametrize("fault", [*FAULTS, "restart"])
def test_a_faulty_server_gives_the_same_batches_with_retries_counted(fault, kind, through_proxy, clean):
    url, proxy = through_proxy
    if fault == "restart":
        fired = threading.Event()

        def during(i: int) -> None:
            if i == 1 and not fired.is_set():  # mid-epoch: down for 3 s, then back with the same data
                fired.set()
                proxy.down(3.0)

        got, retries = epoch(config(url), kind, during)
        assert proxy.counts["down"] == 1
    else:
        FAULTS[fault](proxy)
        got, retries = epoch(config(url), kind)
        assert proxy.counts[fault] > 0, proxy.counts
    same(got, clean[kind])
    assert retries > 0, proxy.counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_a_server_down_past_the_budget_is_one_line_naming_url_and_budget(kind, through_proxy):
    url, proxy = through_proxy
    cfg = config(url, remote_attempts=2, remote_timeout_s=1.0)

    def down_after_the_first_batch(i: int) -> None:
        if i == 0:
            proxy.down(None)

    try:
        with pytest.raises(RemoteReadError) as e:
            epoch(cfg, kind, down_after_the_first_batch)
        message = str(e.value)
        assert "\n" not in message and "failed after 2 attempts (data.remote_attempts)" in message, message
        assert message.startswith(url) and "1 s timeouts (data.remote_timeout_s)" in message
        with pytest.raises(ShardSetError, match=r"cannot read manifest.json .*failed after 2 attempts"):
            open_loader(cfg, kind)  # down when the loader opens: the same budget, one line
    finally:
        proxy.up()


def rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(600)
def test_training_counts_retries_and_stops_on_a_dead_server_with_a_checkpoint_that_resumes(servers, tmp_path,
                                                                                           capsys, monkeypatch):
    from test_train import MICRO

    from salt.data import storage
    from salt.train import main as train_main

    # 4 KiB blocks, one cached per shard: the tiny shards are read all along, as a large set's would be
    monkeypatch.setattr(storage, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(storage, "BLOCKS", 1)

    endpoint, _ = servers
    run = tmp_path / "run"
    base = MICRO + ["--stage", "teacher", "--shards", "s3://faulty/synth", "--steps", "10", "--run.log_every=1",
                    "--run.checkpoint_every=100", "--data.remote_timeout_s=1"]
    with fault_proxy(endpoint) as proxy, s3_configured(proxy.url):
        proxy.throttle(0.2)  # a busy bucket: the run completes, and says how often it retried
        assert train_main(base + ["--run-dir", str(tmp_path / "busy")]) == 0
        summary = json.loads((tmp_path / "busy" / "summary.json").read_text())
        assert summary["finished"] and summary["storage_retries"] > 0 and proxy.counts["throttled"] > 0
        proxy.clear()

        def kill_server_after_three_steps() -> None:
            while len(rows(run)) < 3:
                threading.Event().wait(0.05)
            proxy.down(None)  # for good, until up() below

        watcher = threading.Thread(target=kill_server_after_three_steps, daemon=True)
        watcher.start()
        capsys.readouterr()
        assert train_main(base + ["--run-dir", str(run), "--data.remote_attempts=2"]) == 1
        watcher.join(timeout=60)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "failed after 2 attempts (data.remote_attempts)" in errors[0], errors
        assert "s3://faulty/synth: reading" in errors[0] and "checkpoint written at step" in errors[0]
        step = int(errors[0].split("checkpoint written at step ")[1].split(":")[0])
        assert step >= 3 and (run / "checkpoints" / f"step_{step:08d}" / "COMPLETE").exists()
        proxy.up()
        assert train_main(base + ["--run-dir", str(run), "--resume"]) == 0
        assert [r["step"] for r in rows(run)] == list(range(1, 11))
