"""Shared fixtures: small synthetic shard sets built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dataprep.shard_job import JobConfig, run_job
from dataprep.synth import write_dataset


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory) -> Path:
    """30 synthetic videos (10 classes), 32x32, 32 frames at 30 fps."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, videos=30, seed=0, size=32, frames=32, fps=30, workers=2, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_shards(synth_videos, tmp_path_factory) -> Path:
    """The synthetic videos as VP9 shards in uneven shards (7, 7, 7, 7, 2 samples)."""
    out = tmp_path_factory.mktemp("shards") / "synth"
    run_job(JobConfig(input=str(synth_videos), name="synth", short_side=32, shard_samples=7), out, workers=2,
            progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny models: on a 2-vCPU VM, waking a second OpenMP thread for every op made a training step up to
    ~200x slower (1.4 s instead of 7 ms, measured). One thread is fast and steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
