"""Loader throughput: clips/s and frames/s per process (per GPU with one), time to first batch, peak memory.

    python benchmarks/loader.py --shards shards/NAME [--loader all] [--batch-size 8] [--seconds 15]
                                [--repeats 3] [--source DIR] [--json OUT]

Loaders, measured on the same data in one run, interleaved, medians over repeats:
  dali         salt's DALI pipeline (samples fed from Python, decode + views in DALI)
  dali-native  the same decode and augmentation with DALI's own fn.readers.webdataset feeding it
               (random crops by fn.random_resized_crop): what the Python feed costs
  dali-decode  fn.readers.webdataset + fn.decoders.video only: the decode share of the pipeline
  reference    PyAV + torch in DataLoader workers (same contract as dali)
  vjepa        V-JEPA-2 style: decord on the original source videos, random access per sample
  decode       the codec's raw sequential decode rate with all cores (PyAV, one process per core),
               as clips/s = frames/s / frames one clip spans: the limit any loader works against
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, median, write_result  # noqa: E402
from salt.data.config import LoaderConfig  # noqa: E402
from salt.data.shardset import ShardSet  # noqa: E402
from salt.data.throughput import measure, run_loader  # noqa: E402
from salt.processes import mp_context  # noqa: E402

LOADERS = ("dali", "dali-native", "dali-decode", "reference", "vjepa", "decode")


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
        target = torch.empty(dense.shape(), dtype=torch.float32)
        feed_ndarray(dense, target)  # the same copy into torch as salt's loader makes
        yield target.shape[0]


def run_vjepa(cfg: LoaderConfig, sources: list[str]) -> Iterator[int]:
    from benchmarks.vjepa_baseline import vjepa_style_loader

    loader = vjepa_style_loader(sources, cfg.recipe(), cfg.batch_size, cfg.threads, cfg.mean, cfg.std, cfg.seed)
    while True:
        for batch in loader:
            yield batch.shape[0]


_PAYLOADS: list[bytes] = []


def _hold_payloads(payloads: list[bytes]) -> None:
    _PAYLOADS[:] = payloads


def _decode_all(_: int) -> int:
    frames = 0
    for data in _PAYLOADS:
        with av.open(io.BytesIO(data)) as c:
            c.streams.video[0].thread_count = 1
            for _ in c.decode(video=0):
                frames += 1
    return frames


def decode_limit(shards: ShardSet, seconds: float, processes: int) -> dict:
    """Sequential decode of whole payloads, one process per core, for about `seconds`."""
    payloads = [shards.video_bytes(i) for i in range(min(len(shards), 64))]
    # every process decodes its own copy of the payloads, handed over once when it starts
    with mp_context().Pool(processes, initializer=_hold_payloads, initargs=(payloads,)) as pool:
        pool.map(_decode_all, range(processes), chunksize=1)  # warm up: started and decoded once
        frames, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            frames += sum(pool.map(_decode_all, range(processes), chunksize=1))
        elapsed = time.perf_counter() - t0
    return {"frames_per_s": frames / elapsed}


def source_paths(shards: ShardSet, source_dir: str | None) -> list[str]:
    """The original video of every sample (from the samples' metadata; a source cut into several clips
    appears once per clip), so the baseline reads as many clips per epoch as the shard loaders."""
    root = Path(source_dir) if source_dir else Path(shards.manifest["options"]["input"])
    if root.is_file():  # a manifest: sources are relative to its folder
        root = root.parent
    out = []
    for i in range(len(shards)):
        src = shards.meta(i)["source"]
        p = Path(src) if Path(src).is_absolute() else root / src
        if p.exists():
            out.append(str(p))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--shards", required=True, help="shard set folder")
    ap.add_argument("--loader", nargs="+", default=["all"], choices=("all", *LOADERS))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-frames", type=int, default=16)
    ap.add_argument("--frame-stride", type=int, default=4)
    ap.add_argument("--crop-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="DALI threads and DataLoader workers (default: all cores)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per loader and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source", default=None, help="folder of the original videos (default: the shard job's input)")
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/loader-<shard set>.json)")
    args = ap.parse_args(argv)

    from salt.data.dali_loader import resolve_device

    device = resolve_device(args.device)
    cfg = LoaderConfig(shards=args.shards, batch_size=args.batch_size, num_frames=args.num_frames,
                       frame_stride=args.frame_stride, crop_size=args.crop_size, threads=args.threads,
                       device=device, seed=0)
    shards = ShardSet(args.shards)
    span = cfg.recipe().span
    wanted = LOADERS if "all" in args.loader else tuple(args.loader)
    sources = source_paths(shards, args.source) if "vjepa" in wanted else []
    if "vjepa" in wanted and len(sources) < args.batch_size:
        print(f"vjepa: found {len(sources)} source videos (< batch size); skipped. Pass --source DIR.",
              file=sys.stderr)
        wanted = tuple(w for w in wanted if w != "vjepa")

    runners: dict[str, Callable[[], Iterator[int]]] = {
        "dali": lambda: run_loader(cfg, "dali"), "reference": lambda: run_loader(cfg, "reference"),
        "dali-native": lambda: run_dali_native(cfg, decode_only=False),
        "dali-decode": lambda: run_dali_native(cfg, decode_only=True),
        "vjepa": lambda: run_vjepa(cfg, sources),
    }
    results: dict[str, list[dict]] = {w: [] for w in wanted}
    for r in range(args.repeats):
        for name in wanted:
            if name == "decode":
                res = decode_limit(shards, args.seconds, args.threads)
                res["clips_per_s"] = res["frames_per_s"] / span
            else:
                res = measure(runners[name], args.seconds)
            results[name].append(res)
            print(f"repeat {r + 1}/{args.repeats} {name}: {res['clips_per_s']:.1f} clips/s", file=sys.stderr)

    rows = []
    limit = median([x["clips_per_s"] for x in results["decode"]]) if "decode" in results else None
    base = median([x["clips_per_s"] for x in results["vjepa"]]) if "vjepa" in results else None
    for name, runs in results.items():
        cps = median([x["clips_per_s"] for x in runs])
        row = {"loader": name, "clips_per_s": cps,
               "frames_per_s": median([x.get("frames_per_s", x["clips_per_s"] * cfg.num_frames) for x in runs])}
        if name != "decode":
            row["first_batch_s"] = median([x["first_batch_s"] for x in runs])
            row["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
        row["vs_vjepa"] = cps / base if base else None
        row["vs_decode_limit"] = cps / limit if limit else None
        rows.append(row)
    device_note = f"per GPU ({device})" if device == "gpu" else "per process (CPU)"
    print(f"\nshards {args.shards}: {len(shards)} samples, {shards.codec.name}, clip {cfg.num_frames}x"
          f"{cfg.crop_size}x{cfg.crop_size} stride {cfg.frame_stride}, batch {cfg.batch_size}, "
          f"{args.threads} threads; {device_note}; medians of {args.repeats}")
    print(format_table(rows, ["loader", "clips_per_s", "frames_per_s", "first_batch_s", "peak_rss_mb",
                              "vs_vjepa", "vs_decode_limit"]))
    name = Path(args.shards).name
    path = write_result(args.json or Path(__file__).parent / "results" / f"loader-{name}.json",
                        "loader", {**vars(args), "device": device, "clip_span_frames": span,
                                   "shard_manifest": {k: shards.manifest[k] for k in
                                                      ("name", "codec", "num_samples", "frame_sizes",
                                                       "frame_rates", "gop")}},
                        rows, {"runs": results, "sources": len(sources)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
