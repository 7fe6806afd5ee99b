"""Training across "nodes" on one machine, through the launchers users run: DeepSpeed's own (a hostfile,
one launcher per node, no ssh) and torchrun (--nnodes 2). Each must equal a 2-rank single-node run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import cpu_ranks_env
from test_train import MICRO, losses

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 6
ENV = cpu_ranks_env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(shards: Path, run: Path) -> list[str]:
    return ["salt/train.py", *MICRO, "--stage", "teacher", "--shards", str(shards), "--run-dir", str(run),
            "--steps", str(STEPS), "--run.log_every=1", f"--run.checkpoint_every={STEPS}"]


def run_all(cmds: list[list[str]], timeout: int = 600) -> None:
    procs = [subprocess.Popen(c, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]


@pytest.fixture(scope="module")
def single_node(synth_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    run_all([[str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
              *train_args(synth_shards, run)]])
    return run


def loader_states(run: Path) -> list[dict]:
    tag = (run / "checkpoints" / "latest").read_text().strip()
    state = torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", map_location="cpu",
                       weights_only=False)
    return state["loader"]


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = losses(run), losses(reference)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in want:  # same arithmetic, same reduction order over gloo: equal up to float noise
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), step
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["world"] == 2 for r in rows)
    # one checkpoint, written once, with one loader state per rank: ranks 0 and 1, each its own slice
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [f"step_{STEPS:08d}"]
    assert (run / "checkpoints" / f"step_{STEPS:08d}" / "COMPLETE").exists()
    states = loader_states(run)
    assert [s["rank"] for s in states] == [0, 1] and {s["world"] for s in states} == {2}
    assert states == loader_states(reference)


def test_rank_slices_of_two_nodes_are_disjoint(synth_shards):
    from salt.data.config import LoaderConfig
    from salt.data.plan import BatchPlanner
    from salt.data.shardset import ShardSet

    shards = ShardSet(synth_shards)
    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, crop_size=32, shuffle_buffer=8)
    seen = []
    for rank in (0, 1):
        planner = BatchPlanner(shards, cfg, rank, 2)
        seen.append({s.key for b in range(planner.batches_per_epoch) for s in planner.plan(0, b).samples if s})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_deepspeed_launcher_two_nodes_without_ssh_equals_one_node(single_node, synth_shards, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    run, port = tmp_path / "run", free_port()
    launcher = [str(BIN / "deepspeed"), "--hostfile", str(hostfile), "--no_ssh", "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    run_all([[*launcher, "--node_rank", str(r), *train_args(synth_shards, run)] for r in (0, 1)])
    assert_same_run(run, single_node)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_two_nodes_equals_one_node(single_node, synth_shards, tmp_path):
    run, port = tmp_path / "run", free_port()
    launcher = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    run_all([[*launcher, "--node_rank", str(r), *train_args(synth_shards, run)] for r in (0, 1)])
    assert_same_run(run, single_node)
