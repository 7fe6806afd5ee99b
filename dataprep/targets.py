"""`python -m dataprep.targets`: precompute a frozen teacher's targets for K views of every sample.

    python -m dataprep.targets --teacher runs/teacher --shards shards/NAME --out cache/NAME --views 8 \\
        [--config vitl_student] [--dtype bf16|fp16|fp8|fp32] [--layers -1] [--batch-size 4] [--data.KEY=VALUE]
    deepspeed --num_gpus 8 dataprep/targets.py ...      # rank r does shards r, r + 8, ...
    python -m dataprep.targets --verify cache/NAME [--teacher runs/teacher] [--shards shards/NAME]

The views (clip start, crop, flip) are a pure function of (sample key, view id, seed), decoded by the
training loader itself, so the student stage (`--targets.cache=cache/NAME`) reads exactly the targets its
online teacher would compute for the view it loads. Pass the student run's `--config` (and overrides):
its data section fixes the geometry and view recipe, `teacher.dtype` and the DeepSpeed config's autocast
fix the teacher's precision. Without --config, the geometry and frame stride are the teacher's own.
Each file is written under a temporary name and renamed when complete, its size and sha256 recorded in
meta.json: rerun the same command to finish an interrupted job. --verify hashes every file in full.

Exit codes: 0 done (or this rank's files done), 1 failed (a write error, e.g. a full disk, is one line
naming the file; --verify: problems found), 75 stopped by SIGTERM/SIGINT at a batch boundary with the
finished files kept and unfinished ones removed: rerun the same command to resume. Under the deepspeed
launcher a signal that reaches the launcher itself makes it exit 1 (its own code) while the ranks stop
the same way. See README.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `deepspeed dataprep/targets.py` puts dataprep/ first on sys.path; import everything by its full name
# from the repository root instead, so no module of dataprep/ can shadow a library.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))

import argparse  # noqa: E402
import os  # noqa: E402

from salt.config import ConfigError, overrides_from_args  # noqa: E402
from salt.data.loaders import LOADERS  # noqa: E402
from salt.interrupt import EXIT_STOPPED  # noqa: E402
from salt.targets.format import STORAGE_DTYPES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dataprep.targets", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--teacher", help="frozen teacher: run folder, export folder, encoder.safetensors or a "
                                      "transformers V-JEPA 2 folder")
    p.add_argument("--shards", help="shard set (shards/NAME)")
    p.add_argument("--out", help="cache folder (cache/NAME) or object-store prefix (s3://BUCKET/NAME)")
    p.add_argument("--staging", default=None,
                   help="with an s3:// --out: where files are made before their upload (default "
                        "~/.cache/salt/staging or $SALT_STAGING)")
    p.add_argument("--views", type=int, help="views per sample (K); the student uses one per epoch")
    p.add_argument("--dtype", default="bf16", choices=STORAGE_DTYPES,
                   help="storage: bf16 (default), fp16, fp32, or fp8 (e4m3 with a per-token scale, half of bf16)")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="teacher blocks whose normed outputs (each layer-normed, concatenated) are the targets; "
                        "default: the final output, the student stage's online targets")
    p.add_argument("--config", default=None, help="the student run's config (YAML or a name in salt/configs)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="samples per batch (the teacher sees K times as many; default 4)")
    p.add_argument("--loader", default=None, choices=LOADERS,
                   help="decoder: the student run's data.loader (default: the config's)")
    p.add_argument("--zstd-level", type=int, default=None, help="zstd level (default: Arrow's)")
    p.add_argument("--overwrite", action="store_true", help="replace a cache in --out made by another job")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verify", metavar="DIR",
                   help="check a cache: every file's sha256, counts, schema, fingerprints, recomputed rows")
    p.add_argument("--verify-files", type=int, default=2, help="--verify: files whose first batch is recomputed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = build_parser()
    args, rest = p.parse_known_args(argv)
    try:
        return args, overrides_from_args(rest)
    except ConfigError as e:
        p.error(str(e))


def resolve_job(args: argparse.Namespace, overrides: list[str]):
    """The job from the student run's config (or the teacher's own geometry) and the flags."""

    from salt.config import load_config
    from salt.engine.deepspeed_setup import autocast_dtype, load_ds_config
    from salt.models.io import read_encoder_info
    from salt.precision import resolve_precision, short_name, weights_dtype
    from salt.targets.job import TargetJob, TargetJobError, job_device

    for name in ("teacher", "shards", "out", "views"):
        if getattr(args, name) is None:
            raise TargetJobError(f"--{name} is required (or --verify DIR)")
    info = read_encoder_info(args.teacher)  # an exported encoder or a transformers V-JEPA 2 folder
    base = [] if args.config else [
        f"data.num_frames={info.num_frames}", f"data.crop_size={info.img_size}",
        f"data.frame_stride={info.frame_stride}", f"model.patch_size={info.patch_size}",
        f"model.tubelet_size={info.tubelet_size}"]
    cfg = load_config(args.config, base + overrides + ["stage=student", f"teacher.path={args.teacher}",
                                                       f"data.shards={args.shards}", "targets.cache="])
    # the student run's precision on this device (run.precision auto: bf16 where native, else fp32);
    # meta.json records it with the teacher (weights_dtype, autocast)
    device = job_device()
    precision = resolve_precision(cfg.run.precision, device, autocast_dtype(load_ds_config(cfg.run.deepspeed_config)))
    if int(os.environ.get("RANK", "0")) == 0 and not args.quiet:
        print(f"targets on {device}: precision {precision.describe()}", flush=True)
    return TargetJob(teacher=args.teacher, out=args.out, num_views=args.views, data=cfg.data,
                     patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size, dtype=args.dtype,
                     teacher_dtype=short_name(weights_dtype(cfg.teacher.dtype, precision.name)),
                     autocast=short_name(precision.autocast),
                     layers=tuple(args.layers) if args.layers else None, batch_size=args.batch_size, staging=args.staging,
                     loader=args.loader or cfg.data.loader, compression_level=args.zstd_level)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from salt.atomic import WriteError
    from salt.data.plan import LoaderError
    from salt.data.shardset import ShardSetError
    from salt.targets.job import TargetJobError, run_job
    from salt.targets.verify import verify_cache

    try:
        if args.verify:
            report = verify_cache(Path(args.verify), teacher=args.teacher, shards=args.shards,
                                  files=args.verify_files, progress=not args.quiet)
            print(report.format())
            return 0 if report.ok else 1
        job = resolve_job(args, overrides)
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        summary = run_job(job, rank, world, overwrite=args.overwrite, progress=not args.quiet)
    except (TargetJobError, ConfigError, LoaderError, ShardSetError, WriteError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if summary.stopped_by:
        prefix = f"[rank {rank}/{world}] " if world > 1 else ""
        print(f"{prefix}stopped by {summary.stopped_by}: {summary.files_finished} of {summary.files_total} files "
              "finished; rerun the same command to resume", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    state = "complete" if summary.complete else "waiting for the other ranks' files"
    print(f"[rank {rank}/{world}] {summary.files_done} files written, {summary.files_skipped} already done; "
          f"{summary.samples} samples ({summary.bad} undecodable) in {summary.seconds:.1f} s; cache {job.out} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
