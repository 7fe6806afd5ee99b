"""The shard job on a Ray cluster: `python -m dataprep.shards --input ... --out ... --ray [ADDRESS]`.

The work units are the job's own parts: part K of N is exactly `--part K/N` (a contiguous slice of the
sorted inputs), run as one Ray task that writes its tars, indexes, journal and part manifest straight
into the shared output folder, atomically, as the local job does. The driver only plans, follows
progress and merges the part manifests into manifest.json. So:

- the shards and manifest equal those of running the N `--part K/N` jobs locally and `--merge`;
- a task whose worker dies is retried by Ray (`max_retries`) and resumes from its part's journal, so
  the result is still identical;
- rerunning the command after the driver was killed redoes only the unfinished parts.

Ray schedules; nothing here is a scheduler of its own.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dataprep.inputs import InputScan, scan_inputs
from dataprep.pool import WorkerPool
from dataprep.shard_job import JobConfig, JobError, JobSummary, TimeBudget, merge_parts, run_job
from salt.data.output import JobOutput, RemoteOutput, open_output

INPUTS_PER_TASK = 32  # default part size: small enough to spread, large enough that a task outlives its start-up


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray instance; "auto", "HOST:PORT" or "ray://HOST:PORT"
    tasks: int | None = None  # parts; None: one per INPUTS_PER_TASK inputs
    cpus_per_task: float = 1.0  # Ray resources of one task; it runs max(1, int(this)) transcode processes
    max_retries: int = 3  # retries of a task whose worker or node died

    def validate(self) -> None:
        if self.tasks is not None and self.tasks < 1:
            raise JobError(f"--ray-tasks must be >= 1, got {self.tasks}")
        if self.cpus_per_task <= 0:
            raise JobError(f"--ray-cpus-per-task must be positive, got {self.cpus_per_task}")
        if self.max_retries < 0:
            raise JobError(f"--ray-max-retries must be >= 0, got {self.max_retries}")


def import_ray():
    try:
        import ray
    except ImportError:
        raise JobError("--ray needs the ray package: pip install -e '.[ray]' (or pip install 'ray>=2.40')") from None
    return ray


def plan_tasks(num_inputs: int, tasks: int | None) -> int:
    """Number of parts: as asked (at most one per input), else one per INPUTS_PER_TASK inputs."""
    n = tasks if tasks is not None else math.ceil(num_inputs / INPUTS_PER_TASK)
    return max(1, min(n, num_inputs))


_pool: WorkerPool | None = None  # this Ray worker's transcode processes, kept across its tasks


def _worker_pool(workers: int) -> WorkerPool:
    global _pool
    if _pool is None or _pool.workers != workers:
        if _pool is not None:
            _pool.stop()
        _pool = WorkerPool(workers)
    return _pool


def _run_part(cfg: JobConfig, out: str, workers: int, budget: TimeBudget, scan: InputScan) -> dict[str, Any]:
    """One Ray task: the local job on one part, on transcode processes this Ray worker keeps (starting
    them costs more than a small part). Signals are Ray's to handle. Returns the part's counts.
    out: a folder every node sees, or an s3:// prefix (each task stages on its own node and uploads)."""
    global _pool
    try:
        m = run_job(cfg, out, progress=False, budget=budget, pool=_worker_pool(workers),
                    handle_signals=False, scan=scan).manifest
    except BaseException:
        if _pool is not None:  # tasks of this part may still be running there: start afresh next time
            _pool.stop()
            _pool = None
        raise
    return {"part": cfg.part, "num_inputs": m["num_inputs"], "num_failed": m["num_failed"],
            "num_samples": m["num_samples"], "seconds": m["total_input_seconds"]}


def run_on_ray(cfg: JobConfig, out: str | Path | JobOutput, opts: RayOptions, budget: TimeBudget | None = None,
               progress: bool = True) -> JobSummary:
    cfg.validate()
    opts.validate()
    if cfg.part is not None:
        raise JobError("--ray runs every part itself: leave out --part")
    ray = import_ray()
    scan = scan_inputs(cfg.input)  # once, on the driver; every task reads it from Ray's object store
    inputs = scan.inputs
    if not inputs:
        raise JobError(f"no video files found in {cfg.input}")
    n = plan_tasks(len(inputs), opts.tasks)
    output = open_output(out)
    output.prepare()
    target = str(output) if isinstance(output, RemoteOutput) else str(output.local.resolve())
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=opts.cpus_per_task, max_retries=opts.max_retries, retry_exceptions=False)(_run_part)
    workers = max(1, int(opts.cpus_per_task))
    scan_ref = ray.put(scan)
    pending = {task.remote(replace(cfg, part=k, num_parts=n), target, workers, budget or TimeBudget(),
                           scan_ref): k for k in range(n)}
    bar = tqdm(total=n, unit="task", disable=not progress, desc=f"ray shards {cfg.name}", dynamic_ncols=True)
    errors: list[str] = []
    videos = 0
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                k = pending.pop(ref)
                try:
                    counts = ray.get(ref)
                    videos += counts["num_inputs"]
                except ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    errors.append(f"part {k}/{n}: {cause if isinstance(cause, JobError) else e}")
                except ray.exceptions.RayError as e:  # retries used up: the worker or its node kept dying
                    errors.append(f"part {k}/{n}: {type(e).__name__}: {str(e).splitlines()[0]}")
                bar.update(1)
                bar.set_postfix(videos=videos, videos_s=f"{videos / (time.perf_counter() - t0):.1f}",
                                failed_tasks=len(errors))
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    if errors:
        shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        raise JobError(f"{len(errors)} of {n} Ray tasks failed ({shown}); fix the cause and rerun the same "
                       "command: finished parts are kept")
    manifest = merge_parts(output)
    failures = [json.loads(line) for line in (output.read_text("failures.jsonl") or "").splitlines() if line.strip()]
    return JobSummary(manifest, time.perf_counter() - t0, 0, failures)
