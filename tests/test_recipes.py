"""The cluster recipes in examples/ run as written: Slurm's variables become the right launcher flags
(with scontrol, srun and the launchers stubbed), the array job's parts merge into the single job's
shards, and every recipe's flags parse with the real command-line parsers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_shards import read_samples
from videos import write_video

from dataprep.shard_job import JobConfig, run_job
from dataprep.shards import build_parser

REPO = Path(__file__).resolve().parents[1]
SLURM = {"SLURM_JOB_NODELIST": "gpu[001-004]", "SLURM_NODEID": "2", "SLURM_NNODES": "4", "SLURM_JOB_ID": "1234"}


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """scontrol lists FAKE_HOSTS; srun runs its command once with the caller's environment; the launchers
    and python print what they were asked to run, as JSON."""
    b = tmp_path / "bin"
    b.mkdir()
    stub(b, "scontrol", 'for h in $FAKE_HOSTS; do echo "$h"; done')
    stub(b, "srun", 'while [[ "$1" == --* ]]; do shift; done; exec "$@"')
    record = ('printf \'{"argv": [%s], "master": "%s:%s"}\\n\' "$(printf \'"%s",\' "$0" "$@" | sed \'s/,$//\')" '
              '"$MASTER_ADDR" "$MASTER_PORT"')
    for name in ("deepspeed", "torchrun", "python"):
        stub(b, name, record)
    return b


# a rendezvous this process (or an earlier test in it) joined must not leak into the recipes
RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def run(script: str, args: list[str], env: dict, fake_bin: Path | None, tmp_path: Path):
    path = f"{fake_bin}:{os.environ['PATH']}" if fake_bin else f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    clean = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("SLURM_")}
    return subprocess.run(["bash", script, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**clean, "PATH": path, "TMPDIR": str(tmp_path), **env})


def recorded(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_train_sbatch_resolves_the_rendezvous_from_slurm(launcher, fake_bin, tmp_path):
    env = {**SLURM, "FAKE_HOSTS": "gpu001 gpu002 gpu003 gpu004", "LAUNCHER": launcher}
    got = recorded(run("examples/slurm/train.sbatch", ["--stage", "student", "--resume"], env, fake_bin, tmp_path))
    argv = got["argv"]
    assert Path(argv[0]).name == launcher and got["master"] == "gpu001:29734"
    assert argv[-4:] == ["salt/train.py", "--stage", "student", "--resume"]
    head = argv[1:argv.index("salt/train.py")]
    flags = {a: b for a, b in zip(head, head[1:] + [""], strict=True) if a.startswith("--") and not b.startswith("--")}
    assert flags["--node_rank"] == "2" and flags["--master_addr"] == "gpu001" and flags["--master_port"] == "29734"
    if launcher == "deepspeed":
        assert "--no_ssh" in argv and flags["--num_gpus"] == "8"
        hostfile = Path(argv[argv.index("--hostfile") + 1]).read_text().splitlines()
        assert hostfile == [f"gpu00{i} slots=8" for i in range(1, 5)]
    else:
        assert flags["--nnodes"] == "4" and flags["--nproc_per_node"] == "8"
    from salt.train import parse_args

    args, _ = parse_args(argv[argv.index("salt/train.py") + 1:])
    assert args.stage == "student" and args.resume


def test_train_node_refuses_a_nodelist_that_disagrees(fake_bin, tmp_path):
    env = {**SLURM, "FAKE_HOSTS": "gpu001 gpu002"}
    proc = run("examples/slurm/train_node.sh", [], env, fake_bin, tmp_path)
    assert proc.returncode == 2 and "has 2 hosts, SLURM_NNODES says 4" in proc.stderr


def test_shards_array_job_then_merge_equals_one_job(tmp_path):
    src = tmp_path / "in"
    for i in range(5):
        write_video(src / f"v{i}.mp4", frames=20, seed=i)
    out = tmp_path / "out" / "set"
    for k in range(3):
        env = {"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_CPUS_PER_TASK": "1"}
        proc = run("examples/slurm/shards.sbatch", [str(src), str(out), "--short-side", "32"], env, None, tmp_path)
        assert proc.returncode == 0, proc.stderr
    merge = subprocess.run([sys.executable, "-m", "dataprep.shards", "--merge", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert merge.returncode == 0, merge.stderr
    one = tmp_path / "one" / "set"
    run_job(JobConfig(input=str(src), name="set", short_side=32), one, progress=False)
    assert {s["__key__"]: s["webm"] for s in read_samples(out)} == {s["__key__"]: s["webm"] for s in read_samples(one)}


def test_shards_sbatch_needs_an_array(tmp_path):
    proc = run("examples/slurm/shards.sbatch", ["in", "out"], {}, None, tmp_path)
    assert proc.returncode != 0 and "run as an array job" in proc.stderr


def test_ray_recipe_flags_parse(fake_bin, tmp_path):
    got = recorded(run("examples/ray/shards.sh", ["/data/videos", "shards/k", "--short-side", "224"],
                       {"CPUS_PER_TASK": "8"}, fake_bin, tmp_path))
    args = build_parser().parse_args(got["argv"][3:])  # after: python -m dataprep.shards
    assert got["argv"][1:3] == ["-m", "dataprep.shards"]
    assert args.ray == "auto" and args.ray_cpus_per_task == 8 and args.short_side == 224


def test_hostfile_example_is_what_deepspeed_reads():
    from deepspeed.launcher.runner import fetch_hostfile

    pool = fetch_hostfile(str(REPO / "examples" / "hostfile"))
    assert dict(pool) == {"gpu-node-0": 8, "gpu-node-1": 8}


def test_recipes_mention_only_real_flags():
    """Every `--flag` a recipe passes to dataprep.shards exists in its parser."""
    known = {a for action in build_parser()._actions for a in action.option_strings}
    for recipe in ("examples/slurm/shards.sbatch", "examples/ray/shards.sh"):
        words = shlex.split((REPO / recipe).read_text(), comments=True)
        used = {w for w in words if w.startswith("--") and "=" not in w}
        assert used <= known, (recipe, used - known)
