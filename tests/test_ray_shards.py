"""The shard job on Ray: identical to the local parts, retried when a worker dies, resumed when the
driver dies. The cluster is a real one (`ray start --head`), in a network namespace of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_shards import tar_digests
from videos import copy_real_videos

from dataprep import ray_shards
from dataprep.ray_shards import RayOptions, plan_tasks, run_on_ray
from dataprep.shard_job import JobConfig, JobError, merge_parts, run_job

REPO = Path(__file__).resolve().parents[1]
TASKS = 3


def local_parts(src: Path, out: Path) -> dict:
    """The reference: the same job as TASKS `--part K/N` runs here, then --merge."""
    for k in range(TASKS):
        run_job(JobConfig(input=str(src), name=out.name, short_side=128, shard_samples=1, clip_seconds=1.0,
                          part=k, num_parts=TASKS), out, progress=False)
    return merge_parts(out)


def test_plan_tasks():
    assert plan_tasks(100, None) == 4 and plan_tasks(5, None) == 1
    assert plan_tasks(5, 8) == 5 and plan_tasks(5, 2) == 2


def test_missing_ray_is_a_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(JobError, match=r"pip install -e '\.\[ray\]'"):
        ray_shards.import_ray()


def test_ray_refuses_part_and_bad_options(tmp_path):
    with pytest.raises(JobError, match="leave out --part"):
        run_on_ray(JobConfig(input=".", name="x", part=0, num_parts=2), tmp_path, RayOptions())
    with pytest.raises(JobError, match="--ray-tasks must be >= 1"):
        run_on_ray(JobConfig(input=".", name="x"), tmp_path, RayOptions(tasks=0))


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                    reason="needs unshare and ip to give the cluster a network namespace of its own")
def test_ray_cluster_killed_worker_and_killed_driver_give_the_local_result(tmp_path):
    src = tmp_path / "in"
    copy_real_videos(src, ("cup.mp4", "box.mp4", "Megamind.avi"))
    ref_out = tmp_path / "ref" / "set"
    ref = local_parts(src, ref_out)

    work = tmp_path / "work"
    work.mkdir()
    script = f"ip link set lo up && exec {sys.executable} tests/ray_scenarios.py {src} {work}"
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=1100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    for scenario in ("killed_worker", "killed_driver", "local"):
        assert result[scenario]["rc"] == 0, (scenario, result[scenario]["stderr"])
        out = work / scenario / "set"
        assert tar_digests(out) == tar_digests(ref_out), scenario
        assert json.loads((out / "manifest.json").read_text()) == {**ref, "options": {**ref["options"]}}, scenario
    kd = result["killed_driver"]
    assert kd["parts_done_before"], "the driver was killed before any part finished"
    # the parts finished before the driver died were not redone (their shards kept their bytes and times)
    done_prefixes = [name.replace("manifest-", "set-").replace(".json", "-") for name in kd["parts_done_before"]]
    kept = [t for t in kd["tars_before"] if any(t.startswith(p) for p in done_prefixes)]
    assert kept and not set(kept) & set(kd["tars_rewritten"])
