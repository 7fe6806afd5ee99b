"""Shard-preparation throughput: seconds of input video processed per second of wall time, per worker.

Compares `dataprep.shards` (with 1 and N workers) against the floor any shard job must match: a
plain single-process PyAV transcode of the same files with the same codec settings (decode, resize,
encode, write one file per input; no resampling, clip cutting, tar or index). With `--ray`, also the
same job as Ray tasks on a local Ray instance of N CPUs (one task per `--ray-inputs-per-task` inputs,
one transcode process per task). Runs are interleaved and repeated; the table shows medians.

    python benchmarks/dataprep.py [--input ../shared/videos] [--repeats 3] [--workers 1 2] [--json OUT]
    unshare -n bash -c 'ip link set lo up; python benchmarks/dataprep.py --ray'   # Ray on loopback only
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, median, write_result  # noqa: E402
from dataprep.inputs import list_inputs  # noqa: E402
from dataprep.shard_job import JobConfig, run_job  # noqa: E402
from dataprep.transcode import SCALER, output_size  # noqa: E402
from salt.data.codecs import DEFAULT_CODEC, codec_spec  # noqa: E402

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "videos"


def plain_transcode(path: str, out_dir: Path, codec: str, short_side: int, gop: int) -> None:
    """The naive loop: decode every frame, resize, encode, write."""
    spec = codec_spec(codec)
    with av.open(path) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        buf = io.BytesIO()
        with av.open(buf, "w", format=spec.container) as dst:
            enc = dst.add_stream(spec.encoder, rate=rate)
            enc.pix_fmt = spec.pix_fmt
            enc.codec_context.thread_count = 1
            enc.options = spec.encoder_options(gop, None)
            n = 0
            try:
                for frame in src.decode(stream):
                    if n == 0:
                        enc.width, enc.height = output_size(frame.width, frame.height, short_side)
                    frame = frame.reformat(width=enc.width, height=enc.height, format=spec.pix_fmt, interpolation=SCALER)
                    frame.pts = n
                    frame.pict_type = av.video.frame.PictureType.NONE
                    for p in enc.encode(frame):
                        dst.mux(p)
                    n += 1
            except av.error.FFmpegError:
                pass  # keep what decoded, like the shard job
            for p in enc.encode():
                dst.mux(p)
        (out_dir / (Path(path).stem + "." + spec.ext)).write_bytes(buf.getvalue())


def _ray_run(cfg: JobConfig, out: Path, cpus: int, tasks: int) -> float:
    """Wall time of the job as Ray tasks on a fresh local instance of `cpus` CPUs (its start not counted)."""
    import ray

    from dataprep.ray_shards import RayOptions, run_on_ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        t = time.perf_counter()
        run_on_ray(cfg, out, RayOptions(tasks=tasks, cpus_per_task=1.0), progress=False)
        return time.perf_counter() - t
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="folder or manifest of videos")
    ap.add_argument("--codec", default=DEFAULT_CODEC)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--gop", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="also run the job on a local Ray instance per worker count")
    ap.add_argument("--ray-inputs-per-task", type=int, default=4)
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/dataprep.json)")
    args = ap.parse_args(argv)

    inputs = list_inputs(args.input)
    times: dict[str, list[float]] = {"plain": []}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            t = time.perf_counter()
            for v in inputs:
                plain_transcode(v.path, Path(tmp), args.codec, args.short_side, args.gop)
            times["plain"].append(time.perf_counter() - t)
            for w in args.workers:
                cfg = JobConfig(input=args.input, name="bench", codec=args.codec, short_side=args.short_side,
                                gop=args.gop, max_fail_frac=1.0)
                t = time.perf_counter()
                m = run_job(cfg, Path(tmp) / "bench", workers=w, overwrite=True, progress=False).manifest
                times.setdefault(f"shards w={w}", []).append(time.perf_counter() - t)
                seconds[f"shards w={w}"] = m["total_input_seconds"]
                if args.ray:
                    name = f"ray w={w}"
                    times.setdefault(name, []).append(_ray_run(cfg, Path(tmp) / f"ray{r}-{w}" / "bench", w,
                                                               -(-len(inputs) // args.ray_inputs_per_task)))
                    seconds[name] = m["total_input_seconds"]
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                  file=sys.stderr)

    # the same files are the same work: rate everything by the shard job's count of input seconds
    seconds["plain"] = seconds[f"shards w={args.workers[0]}"]
    base = seconds["plain"] / median(times["plain"])
    rows = []
    for name, ts in times.items():
        workers = 1 if name == "plain" else int(name.split("=")[1])  # "shards w=2", "ray w=2"
        rate = seconds[name] / median(ts)
        rows.append({"job": name, "workers": workers, "input_s": seconds[name], "wall_s_median": median(ts),
                     "video_s_per_s": rate, "per_worker": rate / workers,
                     "per_worker_vs_plain": rate / workers / base, "total_vs_plain": rate / base})
    print(format_table(rows, ["job", "workers", "input_s", "wall_s_median", "video_s_per_s", "per_worker",
                              "per_worker_vs_plain", "total_vs_plain"]))
    path = write_result(args.json, "dataprep", vars(args), rows,
                        {"inputs": [v.source for v in inputs], "wall_s_all": times})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
