"""Loader throughput: clips/s and frames/s per process (per GPU with one), time to first batch, peak memory.

    python benchmarks/loader.py --shards shards/NAME [--loader all] [--batch-size 8] [--seconds 15]
                                [--repeats 3] [--source DIR] [--profile] [--target-step-ms MS] [--json OUT]

Loaders, measured on the same data in one run, interleaved, medians over repeats:
  dali              salt's loader as training runs it: samples fed from Python, decoded by DALI, views
                    cut in torch on the CPU (in DALI on a GPU), handed over as uint8
  dali+normalise    the same, each batch then converted to float32 and normalised on the CPU, as a
                    CPU training step does (on a GPU that step runs on the GPU)
  dali-float        the earlier way: DALI crops, resizes, flips and normalises to float32 itself
  dali-views2       salt's loader cutting 2 views from each decode (views/s vs clips/s)
  dali-decode       salt's feed and DALI's decode of the same samples and start frames, nothing after:
                    the decode share of salt's pipeline (the full pipeline's target is 0.8 of it)
  dali-native       DALI's own fn.readers.webdataset feeding DALI's decode and float32 augmentation
                    (fn.random_resized_crop): what the Python feed costs
  dali-native-decode  fn.readers.webdataset + fn.decoders.video only. Its start frames are drawn over
                    the shortest sample's length (the reader gives no per-sample length), so on sets
                    with a few short samples it decodes less than salt's loader, which draws each
                    sample's start over its own length
  reference         PyAV + torch in DataLoader workers (same contract as dali)
  vjepa-decord      V-JEPA 2's loader: decord opens the original source video per sample
  vjepa-torchcodec  the same with torchcodec (seek_mode="approximate", one FFmpeg thread per worker)
  shards-torchcodec a DataLoader over the shards, torchcodec decoding each sample's bytes
  decode            the codec's raw sequential decode rate with all cores (PyAV, one process per core),
                    as clips/s = frames/s / frames one clip spans: the limit any loader works against
  decode-rgb        the same with each frame converted to RGB, the form every loader hands on

The source baselines read the same seconds of video as a shard clip (their stride is the shard stride
times source fps / shard fps). --profile adds the time of each stage of one batch; --target-step-ms
says whether a training step that long would wait for the loader.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import BASELINES, baseline_loader, source_stride, unavailable  # noqa: E402
from benchmarks.common import format_table, median, write_result  # noqa: E402
from benchmarks.loader_profile import (  # noqa: E402
    decode_only_pipeline,
    profile_batches,
    profile_rows,
    step_budget,
)
from salt.data.config import LoaderConfig  # noqa: E402
from salt.data.loaders import open_loader  # noqa: E402
from salt.data.shardset import ShardSet  # noqa: E402
from salt.data.throughput import measure, run_loader  # noqa: E402
from salt.processes import mp_context  # noqa: E402

LOADERS = ("dali", "dali+normalise", "dali-float", "dali-views2", "dali-decode", "dali-native", "dali-native-decode",
           "reference",
           *BASELINES, "decode", "decode-rgb")
SOURCE_BASELINES = ("vjepa-decord", "vjepa-torchcodec")


def run_dali_native(cfg: LoaderConfig, decode_only: bool) -> Iterator[int]:
    from nvidia.dali import fn, pipeline_def, types

    shards = ShardSet(cfg.shards)
    paths = [str(shards.root / s["path"]) for s in shards.manifest["shards"]]
    index = [str(shards.root / s["index"]) for s in shards.manifest["shards"]]
    min_frames = min(shards.meta(i)["frames"] for i in range(len(shards)))
    max_start = max(0, min_frames - cfg.recipe().span)
    device = "mixed" if cfg.device == "gpu" else "cpu"

    @pipeline_def(batch_size=cfg.batch_size, num_threads=cfg.threads, device_id=0 if device == "mixed" else None,
                  prefetch_queue_depth=cfg.prefetch, seed=cfg.seed)
    def pipe():
        video = fn.readers.webdataset(paths=paths, index_paths=index, ext=[shards.video_ext], random_shuffle=True,
                                      initial_fill=cfg.shuffle_buffer, shuffle_after_epoch=True, name="reader")
        start = fn.cast(fn.random.uniform(range=[0, max_start + 1]), dtype=types.INT32)
        frames = fn.decoders.video(video, device=device, start_frame=start, sequence_length=cfg.num_frames,
                                   stride=cfg.frame_stride, pad_mode="edge")
        if decode_only:
            return frames
        x = fn.random_resized_crop(frames, size=[cfg.crop_size, cfg.crop_size], random_area=list(cfg.scale),
                                   random_aspect_ratio=list(cfg.ratio), antialias=True)
        return fn.crop_mirror_normalize(x, mirror=fn.random.coin_flip(), mean=[m * 255 for m in cfg.mean],
                                        std=[s * 255 for s in cfg.std], output_layout="CFHW", dtype=types.FLOAT)

    from nvidia.dali.plugin.pytorch import feed_ndarray

    p = pipe()
    p.build()
    while True:  # the reader wraps around at the end of an epoch
        (out,) = p.run()
        if decode_only:  # frames keep each source's size: count them, no dense tensor to copy
            yield len(out)
            continue
        dense = out.as_tensor()
        target = torch.empty(dense.shape(), dtype=torch.float32, device="cuda" if device == "mixed" else "cpu")
        feed_ndarray(dense, target, cuda_stream=torch.cuda.current_stream() if device == "mixed" else None)
        yield target.shape[0]


def run_salt_decode(cfg: LoaderConfig) -> Iterator[int]:
    """salt's feed (same samples and start frames as the loader) into DALI's decoder alone."""
    feeder, pipe = decode_only_pipeline(cfg, cfg.device)
    while True:
        pipe.run()
        feeder.in_flight.popleft()
        yield cfg.batch_size


def run_normalised(cfg: LoaderConfig) -> Iterator[int]:
    """salt's loader, each batch then turned into float32 model input on the CPU."""
    for batch in open_loader(cfg, "dali").endless():
        batch.model_input("cpu")
        yield batch.video.shape[0]


def run_baseline(name: str, cfg: LoaderConfig, sources: list[tuple[str, int]]) -> Iterator[int]:
    loader = baseline_loader(name, cfg.recipe(), cfg.batch_size, cfg.threads, cfg.mean, cfg.std,
                             sources=[p for p, _ in sources], source_strides=[s for _, s in sources],
                             shards_dir=cfg.shards, seed=cfg.seed, repeat=1000)
    while True:
        for batch in loader:
            yield batch.shape[0]


_PAYLOADS: list[bytes] = []


def _hold_payloads(payloads: list[bytes]) -> None:
    _PAYLOADS[:] = payloads


def _decode_all(to_rgb: bool) -> int:
    frames = 0
    for data in _PAYLOADS:
        with av.open(io.BytesIO(data)) as c:
            c.streams.video[0].thread_count = 1
            for frame in c.decode(video=0):
                if to_rgb:
                    frame.to_ndarray(format="rgb24")
                frames += 1
    return frames


def decode_limit(shards: ShardSet, seconds: float, processes: int, to_rgb: bool) -> dict:
    """Sequential decode of whole payloads (to_rgb: and conversion to RGB, the form a loader hands on),
    one process per core, for about `seconds`."""
    payloads = [shards.video_bytes(i) for i in range(min(len(shards), 64))]
    # every process decodes its own copy of the payloads, handed over once when it starts
    with mp_context().Pool(processes, initializer=_hold_payloads, initargs=(payloads,)) as pool:
        pool.map(_decode_all, [to_rgb] * processes, chunksize=1)  # warm up: started and decoded once
        frames, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            frames += sum(pool.map(_decode_all, [to_rgb] * processes, chunksize=1))
        elapsed = time.perf_counter() - t0
    return {"frames_per_s": frames / elapsed}


def source_clips(shards: ShardSet, source_dir: str | None, frame_stride: int) -> list[tuple[str, int]]:
    """(original video, stride) per sample (from the samples' metadata; a source cut into several clips
    appears once per clip, so the baselines read as many clips per epoch as the shard loaders). The
    stride covers the seconds a shard clip covers, at the source's frame rate."""
    root = Path(source_dir) if source_dir else Path(shards.manifest["options"]["input"])
    if root.is_file():  # a manifest: sources are relative to its folder
        root = root.parent
    out = []
    for i in range(len(shards)):
        meta = shards.meta(i)
        p = Path(meta["source"]) if Path(meta["source"]).is_absolute() else root / meta["source"]
        if p.exists():
            out.append((str(p), source_stride(meta["source_fps"], meta["fps"], frame_stride)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--shards", required=True, help="shard set folder")
    ap.add_argument("--loader", nargs="+", default=["all"], choices=("all", *LOADERS))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-frames", type=int, default=None,
                    help="frames per clip (default: the shards' --train-clip, else 16)")
    ap.add_argument("--frame-stride", type=int, default=None,
                    help="stride in stored frames (default: 1 for --train-clip shards, else 4)")
    ap.add_argument("--crop-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="DALI threads and DataLoader workers (default: all cores)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per loader and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source", default=None, help="folder of the original videos (default: the shard job's input)")
    ap.add_argument("--profile", action="store_true", help="also time each stage of a batch, one after another")
    ap.add_argument("--profile-batches", type=int, default=10)
    ap.add_argument("--target-step-ms", type=float, default=None,
                    help="a training step time: print the clips/s it needs and whether the loader keeps up")
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/loader-<shard set>.json)")
    args = ap.parse_args(argv)

    from salt.data.dali_loader import resolve_device

    device = resolve_device(args.device)
    shards = ShardSet(args.shards)
    clip = shards.manifest.get("train_clip") or {}
    num_frames = args.num_frames or clip.get("frames", 16)
    frame_stride = args.frame_stride or clip.get("load_stride", 4)
    cfg = LoaderConfig(shards=args.shards, batch_size=args.batch_size, num_frames=num_frames,
                       frame_stride=frame_stride, crop_size=args.crop_size, threads=args.threads,
                       device=device, seed=0)
    span = cfg.recipe().span
    wanted = LOADERS if "all" in args.loader else tuple(args.loader)
    for name in [w for w in wanted if w in BASELINES]:
        why = unavailable(name)
        if why:  # the other rows are still measured and reported
            print(f"{name}: skipped: {why}", file=sys.stderr)
            wanted = tuple(w for w in wanted if w != name)
    sources = source_clips(shards, args.source, frame_stride) if set(SOURCE_BASELINES) & set(wanted) else []
    if set(SOURCE_BASELINES) & set(wanted) and len(sources) < args.batch_size:
        print(f"{', '.join(SOURCE_BASELINES)}: found {len(sources)} source videos (< batch size); skipped. "
              f"Pass --source DIR.", file=sys.stderr)
        wanted = tuple(w for w in wanted if w not in SOURCE_BASELINES)

    views2 = replace(cfg, views_per_clip=2)
    runners: dict[str, Callable[[], Iterator[int]]] = {
        "dali": lambda: run_loader(cfg, "dali"), "reference": lambda: run_loader(cfg, "reference"),
        "dali+normalise": lambda: run_normalised(cfg),
        "dali-float": lambda: run_loader(replace(cfg, handoff="float32"), "dali"),
        "dali-views2": lambda: run_loader(views2, "dali"),
        "dali-decode": lambda: run_salt_decode(cfg),
        "dali-native": lambda: run_dali_native(cfg, decode_only=False),
        "dali-native-decode": lambda: run_dali_native(cfg, decode_only=True),
        **{b: (lambda b=b: run_baseline(b, cfg, sources)) for b in BASELINES},
    }
    views_of = {"dali-views2": 2}  # views cut from each decoded clip; 1 for the others
    results: dict[str, list[dict]] = {w: [] for w in wanted}
    for r in range(args.repeats):
        for name in wanted:
            if name in ("decode", "decode-rgb"):
                res = decode_limit(shards, args.seconds, args.threads, to_rgb=name == "decode-rgb")
                res["clips_per_s"] = res["frames_per_s"] / span
            else:
                res = measure(runners[name], args.seconds)  # counts views
                res["views_per_s"] = res["clips_per_s"]
                res["clips_per_s"] /= views_of.get(name, 1)
            results[name].append(res)
            print(f"repeat {r + 1}/{args.repeats} {name}: {res['clips_per_s']:.1f} clips/s", file=sys.stderr)

    def rate(name: str) -> float | None:
        return median([x["clips_per_s"] for x in results[name]]) if name in results else None

    refs = {"vs_decode_only": rate("dali-decode"), "vs_decode_limit": rate("decode"),
            "vs_rgb_limit": rate("decode-rgb"),
            "vs_decord": rate("vjepa-decord"), "vs_torchcodec": rate("vjepa-torchcodec")}
    rows = []
    for name, runs in results.items():
        cps = median([x["clips_per_s"] for x in runs])
        row = {"loader": name, "clips_per_s": cps,
               "views_per_s": median([x.get("views_per_s", x["clips_per_s"]) for x in runs]),
               "frames_per_s": median([x.get("frames_per_s", x["clips_per_s"] * cfg.num_frames) for x in runs])}
        if not name.startswith("decode"):
            row["first_batch_s"] = median([x["first_batch_s"] for x in runs])
            row["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
        row.update({k: cps / ref if ref else None for k, ref in refs.items()})
        rows.append(row)
    device_note = f"per GPU ({device})" if device == "gpu" else "per process (CPU)"
    print(f"\nshards {args.shards}: {len(shards)} samples, {shards.codec.name} at {shards.manifest['fps']} fps, "
          f"clip {cfg.num_frames}x{cfg.crop_size}x{cfg.crop_size} stride {cfg.frame_stride}, batch "
          f"{cfg.batch_size}, {args.threads} threads; {device_note}; medians of {args.repeats}")
    print(format_table(rows, ["loader", "clips_per_s", "views_per_s", "first_batch_s", "peak_rss_mb",
                              "vs_decode_only", "vs_decode_limit", "vs_rgb_limit", "vs_decord", "vs_torchcodec"]))

    extra: dict = {"runs": results, "sources": len(sources)}
    if args.profile:
        prof = profile_batches(cfg, args.profile_batches)
        print(f"\none batch ({cfg.batch_size} clips), each stage alone, median of {args.profile_batches}:")
        print(format_table(profile_rows(prof), ["stage", "ms_per_batch", "share_pct"]))
        extra["profile"] = prof
    if args.target_step_ms:
        loader_rate = rate("dali") or (extra["profile"]["serial_clips_per_s"] if "profile" in extra else None)
        if loader_rate is None:
            print("--target-step-ms needs the dali row or --profile", file=sys.stderr)
        else:
            budget = step_budget(loader_rate, cfg.batch_size, cfg.views_per_sample, args.target_step_ms)
            verdict = ("loader-bound: the step will wait for data" if budget["loader_bound"]
                       else "not loader-bound")
            print(f"\na {args.target_step_ms:g} ms step at batch {cfg.batch_size} needs "
                  f"{budget['clips_per_s_needed']:.1f} clips/s per process; the loader gives "
                  f"{loader_rate:.1f} ({budget['headroom']:.2f}x): {verdict}")
            extra["step_budget"] = budget
    name = Path(args.shards).name
    path = write_result(args.json or Path(__file__).parent / "results" / f"loader-{name}.json",
                        "loader", {**vars(args), "device": device, "num_frames": num_frames,
                                   "frame_stride": frame_stride, "clip_span_frames": span,
                                   "shard_manifest": {k: shards.manifest.get(k) for k in
                                                      ("name", "codec", "fps", "train_clip", "num_samples",
                                                       "frame_sizes", "frame_rates", "gop")}},
                        rows, extra)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
