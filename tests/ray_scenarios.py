"""Fault scenarios of the shard job on a real Ray cluster, run by tests/test_ray_shards.py inside a
network namespace of its own (`unshare -n`), so the cluster is reachable on loopback only.

    python tests/ray_scenarios.py INPUT_DIR WORK_DIR   → prints one JSON object

Starts a head node (`ray start --head --num-cpus 2`), then: (1) a job whose Ray worker is killed
with SIGKILL while it transcodes; (2) a job whose driver is killed, then rerun; (3) a job on a local
Ray instance (`--ray` without an address). Stops the cluster at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PORT = 6391
JOB_ARGS = ["--short-side", "128", "--shard-samples", "1", "--clip-seconds", "1", "--ray-tasks", "3", "--quiet"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
BIN = Path(sys.executable).parent


def wait_for(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def job(inp: str, out: Path, address: str | None) -> subprocess.Popen:
    ray = ["--ray"] + ([address] if address else [])
    return subprocess.Popen([sys.executable, "-m", "dataprep.shards", "--input", inp, "--out", str(out), *JOB_ARGS,
                             *ray], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def part_workers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or []) or p.info["name"] or ""
        except psutil.Error:
            continue
        if title.startswith("ray::_run_part"):
            found.append(p)
    return found


def main() -> None:
    inp, work = sys.argv[1], Path(sys.argv[2])
    address = f"127.0.0.1:{PORT}"
    result: dict = {}
    temp = tempfile.mkdtemp(prefix="salt-ray-")  # short: Ray's socket paths live under it
    start = subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(PORT),
                            "--temp-dir", temp, "--include-dashboard", "false", "--disable-usage-stats"],
                           env=ENV, capture_output=True, text=True)
    if start.returncode:
        raise SystemExit(f"ray start failed:\n{start.stdout[-1500:]}\n{start.stderr[-1500:]}")
    try:
        # (1) a Ray worker killed mid-task: Ray retries the task, which resumes from its part's journal
        out = work / "killed_worker" / "set"
        proc = job(inp, out, address)
        wait_for(lambda: any(out.glob(".journal-p*/shard-*.json")), 300, "a finished shard")
        wait_for(lambda: part_workers(), 60, "a running part task")
        victim = part_workers()[0]
        victim.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        result["killed_worker"] = {"rc": proc.returncode, "stderr": err[-2000:], "killed_pid": victim.pid}

        # (2) the driver killed: a rerun of the same command redoes only the unfinished parts
        out = work / "killed_driver" / "set"
        proc = job(inp, out, address)
        wait_for(lambda: any(out.glob("manifest-p*.json")), 300, "a finished part")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        done = sorted(p.name for p in out.glob("manifest-p*.json"))
        mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
        rerun = job(inp, out, address)
        _, err = rerun.communicate(timeout=600)
        rewritten = sorted(n for n, t in mtimes.items() if (out / n).stat().st_mtime_ns != t)
        result["killed_driver"] = {"rc": rerun.returncode, "stderr": err[-2000:], "parts_done_before": done,
                                   "tars_before": sorted(mtimes), "tars_rewritten": rewritten}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=ENV, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)

    # (3) no address: the job starts a Ray instance of its own and stops it
    out = work / "local" / "set"
    proc = job(inp, out, None)
    _, err = proc.communicate(timeout=600)
    result["local"] = {"rc": proc.returncode, "stderr": err[-2000:]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
