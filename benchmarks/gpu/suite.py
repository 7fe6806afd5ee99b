"""Tier 2 of the GPU suite: DALI's GPU loader, and how it compares with the training step.

    python benchmarks/gpu/suite.py --out DIR [--shards-root .gpu/shards] [--tier1 SUITE_JSON] [--budget-s 240]
    python benchmarks/gpu/suite.py --out DIR --dry --shards-root DIR   # the same code on the CPU, tiny sizes

Measures, each until the time budget is spent (what is left is recorded as skipped):
  1. the DALI loader's clips/s on H.264 and HEVC training-rate shards decoded by NVDEC (`mixed`), views cut
     on the GPU, the uint8 hand-off normalised on the GPU;
  2. VP9 decoded on the CPU with the crop and resize on the GPU (data.gpu_decode=false).
It ends with loader clips/s over each stage's training clips/s, the fastest fitting setting per stage of
tier 1's steps (`--tier1`, the suite.json tier 1 wrote: benchmarks/gpu/rehearsal.py). Writes
suite-tier2.json. `benchmarks/gpu/prepare.py --tier 2` readies the wheels and shards and prints the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import format_table, write_result  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """What tier 2 measures; the dry plan is the same shape at CPU sizes."""

    loader_codecs: tuple[tuple[str, bool], ...]  # (shard set under --shards-root, decode on the GPU)
    loader_batch: int
    loader_seconds: float
    loader_threads: int


GPU_PLAN = Plan(loader_codecs=(("h264", True), ("hevc", True), ("vp9", False)), loader_batch=32,
                loader_seconds=10.0, loader_threads=min(8, os.cpu_count() or 1))
DRY_PLAN = Plan(loader_codecs=(("vp9", True),), loader_batch=2, loader_seconds=0.5, loader_threads=1)


def loader_rows(plan: Plan, shards_root: Path, device: str, deadline: float) -> list[dict]:
    import torch

    from salt.data.config import LoaderConfig
    from salt.data.loaders import open_loader
    from salt.data.shardset import ShardSet
    from salt.data.throughput import measure

    rows = []
    for name, gpu_decode in plan.loader_codecs:
        root = shards_root / name
        if not (root / "manifest.json").exists():
            rows.append({"shards": name, "skipped": f"no shard set at {root}"})
            continue
        if time.monotonic() > deadline:
            rows.append({"shards": name, "skipped": "time budget"})
            continue
        shards = ShardSet(root, verify=False)
        clip = shards.manifest.get("train_clip") or {}
        cfg = LoaderConfig(shards=str(root), batch_size=min(plan.loader_batch, len(shards)), num_frames=clip.get("frames", 16),
                           frame_stride=clip.get("load_stride", 1), crop_size=224 if device == "gpu" else 32,
                           threads=plan.loader_threads, device=device, gpu_decode=gpu_decode)
        target = torch.device("cuda", 0) if device == "gpu" else torch.device("cpu")

        def batches(cfg=cfg, target=target):
            for batch in open_loader(cfg, "dali", device=target).endless():
                x = batch.model_input(target)  # normalised where training runs
                if target.type == "cuda":
                    torch.cuda.synchronize(target)
                yield x.shape[0]

        try:
            res = measure(batches, plan.loader_seconds)
        except Exception as e:  # noqa: BLE001  (a codec this machine's DALI cannot decode: reported, not fatal)
            rows.append({"shards": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            continue
        rows.append({"shards": name, "codec": shards.codec.name,
                     "decode": "gpu (NVDEC)" if device == "gpu" and gpu_decode else "cpu",
                     "augment": device, "batch": cfg.batch_size, **res})
    return rows


def fastest_steps(tier1: dict) -> dict[str, dict]:
    """The fastest fitting row per size/stage of tier 1's step measurements."""
    fastest: dict[str, dict] = {}
    for r in tier1.get("rows", []):
        if r.get("fits"):
            key = f"{r['size']}/{r['stage']}"
            if key not in fastest or r["clips_per_s"] > fastest[key]["clips_per_s"]:
                fastest[key] = r
    return fastest


def summarise(loader: list[dict], tier1: dict | None) -> dict:
    """Loader clips/s (the fastest shard set) over each stage's fastest training clips/s."""
    fastest = fastest_steps(tier1 or {})
    rates = [r["clips_per_s"] for r in loader if "clips_per_s" in r]
    loader_rate = max(rates) if rates else None
    return {"fastest": {k: {f: r.get(f) for f in ("variant", "batch", "clips_per_s", "mfu", "memory_gb")}
                        for k, r in fastest.items()},
            "loader_clips_per_s": loader_rate,
            "loader_over_training": {k: loader_rate / r["clips_per_s"] for k, r in fastest.items()}
            if loader_rate else {}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, help="folder for suite-tier2.json")
    ap.add_argument("--shards-root", default=".gpu/shards", help="holds the shard sets h264/, hevc/, vp9/")
    ap.add_argument("--tier1", default=None, help="tier 1's suite.json: the training steps to compare with")
    ap.add_argument("--budget-s", type=float, default=240.0, help="stop starting measurements after this long")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes: the same code paths, in seconds")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    if args.dry:
        os.environ["DS_ACCELERATOR"] = "cpu"
    import torch

    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU check", file=sys.stderr)
        return 2
    plan = DRY_PLAN if args.dry else GPU_PLAN
    tier1 = None
    if args.tier1 and Path(args.tier1).exists():
        tier1 = json.loads(Path(args.tier1).read_text())
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "dry": args.dry}
    try:
        import nvidia.dali as dali

        facts["dali"] = dali.__version__
    except ImportError:
        facts["dali"] = None
    loader = loader_rows(plan, Path(args.shards_root), "cpu" if args.dry else "gpu", deadline)
    summary = summarise(loader, tier1)
    print(format_table(loader, ["shards", "decode", "augment", "batch", "clips_per_s", "first_batch_s", "skipped",
                                "error"]))
    print()
    print(json.dumps(summary, indent=1))
    path = write_result(Path(args.out) / "suite-tier2.json", "gpu-suite-tier2",
                        {**vars(args), "plan": plan.__dict__, **facts, "wall_s": time.monotonic() - t_start},
                        loader, {"summary": summary, "tier1_found": tier1 is not None})
    print(f"wrote {path} in {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
