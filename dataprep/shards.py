"""`python -m dataprep.shards`: videos → WebDataset tar shards that the DALI loader reads fast (the command
line of dataprep/shard_job.py, locally or on Ray).

Each input video is decoded, resampled to a constant frame rate, resized, optionally cut into clips
and re-encoded with a short closed GOP. Samples are assigned to shards in the order of the sorted
input list, so the shards' contents do not depend on `--workers`. Shards are written under a
temporary name and renamed when complete; a journal beside them lets a rerun resume. See README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from dataprep.shard_job import (
    JOB_DEFAULTS,
    JobConfig,
    JobError,
    JobSummary,
    TimeBudget,
    merge_parts,
    open_journal,
    run_job,
)
from salt.data.codecs import CODECS
from salt.data.output import OutputError, open_output
from salt.interrupt import EXIT_STOPPED, Stopped


def _parse_part(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes K/N (e.g. 3/8), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text}: need 0 <= K < N")
    return k, n


def _number(kind: type, low: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


def _fps(text: str) -> str:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a frame rate like 15 or 30000/1001, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive frame rate, got {text}")
    return text


def _timeout(text: str) -> float | None:
    if text == "auto":
        return None
    return _number(float, 0, "'auto' or seconds >= 0 (0: no limit)")(text) or float("inf")


def build_parser() -> argparse.ArgumentParser:
    positive = _number(int, 1, "an integer >= 1")
    p = argparse.ArgumentParser(prog="python -m dataprep.shards", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog=f"Exit codes: 0 done; 1 failed (failure budget, full disk: the message "
                                       f"names the file); 2 bad arguments; {EXIT_STOPPED} stopped by SIGTERM or "
                                       "SIGINT with the finished shards kept (rerun the same command to resume).")
    p.add_argument("--input", help="directory of videos (label = first sub-folder) or a .csv/.jsonl manifest "
                                   "with 'path' and optional 'label'")
    p.add_argument("--out", help="output folder (shards/NAME) or object-store prefix (s3://BUCKET/NAME); NAME names "
                                  "the shard files")
    p.add_argument("--staging", default=None,
                   help="with an s3:// --out: where files are made before their upload (default "
                        "~/.cache/salt/staging or $SALT_STAGING); holds only the shards being written")
    p.add_argument("--codec", default=JOB_DEFAULTS["codec"], choices=sorted(CODECS),
                   help="vp9 decodes with DALI on CPU and GPU; h264/hevc need NVDEC (GPU) in DALI")
    p.add_argument("--fps", type=_fps, default=JOB_DEFAULTS["fps"],
                   help="constant output frame rate (e.g. 15 or 30000/1001); default keeps each source's rate")
    p.add_argument("--train-clip", default=JOB_DEFAULTS["train_clip"], metavar="FxS@FPS",
                   help="store the shards at the rate a run samples: 16x4@30 (16 frames at stride 4 of 30 fps) "
                        "stores 7.5 fps, read at stride 1; decoding gets about 2x cheaper, and another stride "
                        "later needs new shards")
    p.add_argument("--short-side", type=_number(int, 0, "an even integer >= 0"),
                   default=JOB_DEFAULTS["short_side"],
                   help="resize so the short side is this (even); 0 keeps")
    p.add_argument("--clip-seconds", type=_number(float, 1e-9, "a positive number of seconds"),
                   default=JOB_DEFAULTS["clip_seconds"],
                   help="cut videos into clips this long; default: one sample per video")
    p.add_argument("--gop", type=positive, default=JOB_DEFAULTS["gop"],
                   help="keyframe interval in frames (closed GOP, no scene cuts)")
    p.add_argument("--quality", type=_number(int, 0, "an integer >= 0"), default=JOB_DEFAULTS["quality"],
                   help="encoder CRF (vp9 32, h264 23, hevc 28) or mjpeg q:v (4)")
    p.add_argument("--min-frames", type=positive, default=JOB_DEFAULTS["min_frames"],
                   help="inputs or trailing clips shorter than this (after resampling) are dropped")
    p.add_argument("--shard-size", type=_number(float, 0, "a size in MB >= 0"),
                   default=JOB_DEFAULTS["shard_size_mb"],
                   help="close a shard at this many MB (0: no limit)")
    p.add_argument("--shard-samples", type=_number(int, 0, "an integer >= 0"),
                   default=JOB_DEFAULTS["shard_samples"],
                   help="close a shard at this many samples (0: no limit)")
    p.add_argument("--workers", type=positive, default=min(4, os.cpu_count() or 1), help="parallel transcode processes")
    p.add_argument("--video-timeout", type=_timeout, default=None, metavar="auto|SECONDS",
                   help="kill a transcode running longer than this and record the input as 'timeout' (0: no "
                        f"limit); auto allows {TimeBudget.minimum:.0f} s + {TimeBudget.per_second:.0f} s per "
                        "second of input video")
    p.add_argument("--max-fail-frac", type=_number(float, 0, "a fraction in [0, 1]"),
                   default=JOB_DEFAULTS["max_fail_frac"],
                   help="fail the job (exit 1) when more than this fraction of inputs is rejected")
    p.add_argument("--part", type=_parse_part, default=None, metavar="K/N",
                   help="process only slice K of N of the sorted inputs (for array jobs); then --merge")
    p.add_argument("--overwrite", action="store_true", help="discard earlier output in --out and start over")
    p.add_argument("--merge", metavar="DIR", help="combine the part manifests in DIR into manifest.json")
    p.add_argument("--info", metavar="DIR", help="print the summary of an existing shard set and exit")
    p.add_argument("--verify", metavar="DIR", help="check every shard of DIR against its manifest (size, sha256, "
                                                   "index) and exit: 0 when all are intact, 1 naming each bad file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray = p.add_argument_group("Ray", "run the parts of the job as Ray tasks (pip install -e '.[ray]'); the result "
                                      "equals the --part K/N jobs of a local run plus --merge")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="'auto' (the cluster this node belongs to), HOST:PORT, ray://HOST:PORT, or nothing "
                          "for a local Ray instance")
    ray.add_argument("--ray-tasks", type=positive, default=None, metavar="N",
                     help="split the sorted inputs into N parts, one Ray task each (default: one per 32 inputs)")
    ray.add_argument("--ray-cpus-per-task", type=_number(float, 1e-3, "a positive number"), default=1.0,
                     help="Ray CPUs reserved by one task; it runs that many transcode processes")
    ray.add_argument("--ray-max-retries", type=_number(int, 0, "an integer >= 0"), default=3,
                     help="times Ray reruns a task whose worker or node died (it resumes from its journal)")
    return p


def _read_manifest(folder: str) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        parts = " (a --part job: run --merge first)" if list(Path(folder).glob("manifest-p*.json")) else ""
        raise JobError(f"{folder} holds no shard set: {path.name} is missing{parts}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JobError(f"{path} is not valid JSON ({e})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.info:
            print(JobSummary(_read_manifest(args.info), 0.0, 0).format())
            return 0
        if args.verify:
            return _verify(args.verify)
        if args.merge:
            print(JobSummary(merge_parts(open_output(args.merge, args.staging)), 0.0, 0).format())
            return 0
        if not args.input or not args.out:
            raise JobError("--input and --out are required (or use --merge / --info / --verify)")
        out = open_output(args.out, args.staging)  # a folder, or s3://BUCKET/PREFIX through a staging folder
        part, num_parts = args.part if args.part else (None, None)
        cfg = JobConfig(input=str(args.input), name=out.name, codec=args.codec, fps=args.fps,
                        train_clip=args.train_clip,
                        short_side=args.short_side, clip_seconds=args.clip_seconds, gop=args.gop,
                        quality=args.quality, min_frames=args.min_frames, shard_size_mb=args.shard_size,
                        shard_samples=args.shard_samples, max_fail_frac=args.max_fail_frac, part=part,
                        num_parts=num_parts)
        budget = TimeBudget(fixed=args.video_timeout)
        if args.ray:
            from dataprep.ray_shards import RayOptions, run_on_ray

            if args.overwrite:
                raise JobError("--overwrite is not supported with --ray: remove the output folder instead")
            ray_opts = RayOptions(address=None if args.ray == "local" else args.ray, tasks=args.ray_tasks,
                                  cpus_per_task=args.ray_cpus_per_task, max_retries=args.ray_max_retries)
            summary = run_on_ray(cfg, out, ray_opts, budget=budget, progress=not args.quiet)
        else:
            summary = run_job(cfg, out, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet,
                              budget=budget)
    except Stopped as e:
        done = len(open_journal(out, cfg.suffix).segments())
        print(f"{e}: {done} shards finished in {args.out}; rerun the same command to resume", file=sys.stderr)
        return EXIT_STOPPED
    except (JobError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    m = summary.manifest
    if m["num_failed"] > cfg.max_fail_frac * m["num_inputs"]:
        print(f"error: {m['num_failed']} of {m['num_inputs']} inputs failed, more than --max-fail-frac "
              f"{cfg.max_fail_frac}; see {out}/failures{cfg.suffix}.jsonl", file=sys.stderr)
        return 1
    return 0


def _verify(folder: str) -> int:
    from salt.data.shardset import verify_shard_set

    _read_manifest(folder)
    problems = verify_shard_set(folder)
    for line in problems:
        print(f"bad: {line}", file=sys.stderr)
    print(f"{folder}: {'all shards intact' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
