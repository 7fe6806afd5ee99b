"""Teacher-target cache: when does reading the frozen teacher's latents beat recomputing them?

    python benchmarks/targets.py [--shards shards/NAME --teacher runs/teacher] [--views 4] [--steps 20]
                                 [--mfu 0.4] [--json benchmarks/results/targets.json]

Measured in one run, on this machine, at tiny sizes (the `tiny` config: ViT-Tiny depth 6 over 4x8x8 tokens):
  student stage   steps/s and clips/s with the online teacher vs the cache in each storage dtype (same init,
                  batches and masks for every cached run), and each run's final loss; plus the loss of one
                  student at the same weights against each dtype's targets (the direct effect of rounding)
  storage         cache bytes per clip (K views) and per view, zstd's ratio, for fp32 / bf16 / fp16 / fp8
  reads           TargetCache row reads: MB/s of stored bytes and views/s, from the page cache, for the tiny
                  rows and for ViT-L-sized rows (1568 x 1024, layer-normed Gaussian: a worst case for zstd)
Projected (salt.flops, not measured): a ViT-L teacher with ViT-L/H/g students on one H200 at an assumed
MFU of the 989 TFLOP/s bf16 dense peak: the teacher forward FLOPs a cached step saves against the bytes it
must read, the read bandwidth at which the cache breaks even and at which it is free, and the speedup at
local NVMe (~6 GB/s) and a network file system (~1.5 GB/s). Without --shards/--teacher the benchmark
makes its own synthetic shards (dataprep.synth + dataprep.shards) and trains a tiny teacher for a few steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, median, write_result  # noqa: E402
from salt.flops import encoder_forward_flops, mask_counts, student_step_flops  # noqa: E402
from salt.masks import TokenGrid, build_mask_generator  # noqa: E402
from salt.models import DEFAULT_PREDICTOR, ENCODER_SIZES  # noqa: E402

DTYPES = ("fp32", "bf16", "fp16", "fp8")
H200_BF16_PEAK = 989e12
BANDWIDTHS = {"nvme": 6e9, "netfs": 1.5e9}  # bytes/s: local NVMe ~5-7 GB/s, network FS ~1-2 GB/s
TINY = ["--config", "tiny", "--run.tensorboard=false", "--run.threads=2"]


def make_data(work: Path, videos: int) -> Path:
    from dataprep.shard_job import JobConfig, run_job
    from dataprep.synth import write_dataset

    src = work / "videos"
    write_dataset(src, videos=videos, seed=0, size=64, frames=64, fps=30, workers=2, progress=False)
    out = work / "shards" / "synth"
    run_job(JobConfig(input=str(src), name="synth", short_side=64, shard_samples=8), out, workers=2, progress=False)
    return out


def make_teacher(work: Path, shards: Path, steps: int) -> Path:
    from salt.train import main as train_main

    run = work / "teacher"
    args = TINY + ["--stage", "teacher", "--shards", str(shards), "--run-dir", str(run), "--steps", str(steps),
                   f"--run.log_every={steps}", f"--run.checkpoint_every={steps}", "--optim.warmup_steps=5"]
    if train_main(args) != 0:
        raise SystemExit("teacher training failed")
    return run


def precompute(teacher: Path, shards: Path, out: Path, views: int, dtype: str) -> float:
    from dataprep.targets import main as targets_main

    t0 = time.perf_counter()
    if targets_main(["--teacher", str(teacher), "--shards", str(shards), "--out", str(out), "--views", str(views),
                     "--dtype", dtype, "--config", "tiny", "--quiet", "--overwrite"]) != 0:
        raise SystemExit(f"precompute ({dtype}) failed")
    return time.perf_counter() - t0


def student_run(shards: Path, run: Path, steps: int, log_every: int, extra: list[str]) -> dict:
    """Trains the tiny student; steps/s from the median logged step time after the first window."""
    from salt.train import main as train_main

    args = TINY + ["--stage", "student", "--shards", str(shards), "--run-dir", str(run), "--steps", str(steps),
                   f"--run.log_every={log_every}", f"--run.checkpoint_every={steps}", *extra]
    if train_main(args) != 0:
        raise SystemExit(f"student run {run.name} failed")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    warm = rows[1:] or rows
    step_s = median([r["step_time_s"] for r in warm])
    return {"steps_per_s": 1 / step_s, "clips_per_s": median([r["clips_per_s"] for r in warm]),
            "data_wait": median([r["data_wait_frac"] for r in warm]), "final_loss": rows[-1]["loss"],
            "tflops": median([r["tflops"] for r in warm])}


def same_weights_losses(shards: Path, caches: dict[str, Path], batches: int) -> dict[str, float]:
    """Mean loss of one freshly initialised student + predictor over the same batches and masks, against
    each dtype's targets."""
    from dataclasses import replace

    from salt.build import build_masks
    from salt.config import load_config
    from salt.data.loaders import open_loader
    from salt.stages import build_objective
    from salt.targets.reader import TargetCache

    opened = {d: TargetCache(p) for d, p in caches.items()}
    ref = opened["fp32"]
    cfg = load_config("tiny", ["stage=student", f"targets.cache={caches['fp32']}", f"data.shards={shards}"])
    torch.manual_seed(0)
    objective = build_objective(cfg, teacher_width=ref.width).eval()
    data = replace(cfg.data, cached_views=ref.num_views)
    out = {d: [] for d in caches}
    with open_loader(data, "dali", mask_generator=build_masks(cfg)) as loader, torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            for d, cache in opened.items():
                targets = cache.read(batch.keys, batch.view_ids).decode()
                out[d].append(float(objective(batch.model_input("cpu"), batch.masks, targets=targets).loss))
    for c in opened.values():
        c.close()
    return {d: statistics.fmean(v) for d, v in out.items()}


def read_throughput(cache_dir: Path, batch: int, repeats: int) -> dict:
    """Reads every (sample, view) row once in a shuffled order, in batches, decoded to float32."""
    from salt.targets.reader import TargetCache

    cache = TargetCache(cache_dir, threads=2)
    keys = sorted(cache.index)
    pairs = [(k, v) for k in keys for v in range(cache.num_views)]
    order = np.random.default_rng(0).permutation(len(pairs))
    times, stored = [], 0
    for _ in range(repeats):
        stored = 0
        t0 = time.perf_counter()
        for a in range(0, len(order), batch):
            sel = [pairs[i] for i in order[a:a + batch]]
            enc = cache.read([k for k, _ in sel], [v for _, v in sel])
            enc.decode()
            stored += enc.nbytes
        times.append(time.perf_counter() - t0)
    cache.close()
    file_bytes = sum(p.stat().st_size for p in cache_dir.glob("*.arrow"))
    t = median(times)
    return {"views_per_s": len(pairs) / t, "read_MB_s": file_bytes / t / 1e6, "decoded_MB_s": stored / t / 1e6}


def large_row_read(work: Path, dtype: str, rows: int, tokens: int = 1568, width: int = 1024) -> dict:
    """One file of ViT-L-sized rows (layer-normed Gaussian), written and read back with the cache's code."""
    from salt.targets.format import arrow_schema, encode, open_arrow
    from salt.targets.writer import ShardTargetWriter

    folder = work / f"large-{dtype}"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [f"k{i:04d}" for i in range(rows)]
    w = ShardTargetWriter(folder, "large.tar", keys, arrow_schema(dtype, tokens, width), "bench", 1, dtype)
    g = torch.Generator().manual_seed(0)
    for k in keys:
        x = torch.nn.functional.layer_norm(torch.randn(1, tokens, width, generator=g), (width,))
        w.add(k, *encode(x, dtype))
    info = w.finish()
    reader = open_arrow(folder / info["file"])
    t0 = time.perf_counter()
    for r in range(rows):
        reader.get_batch(r).column(2).values.to_numpy(zero_copy_only=False)
    t = time.perf_counter() - t0
    return {"bytes_per_view": info["bytes"] / rows, "read_MB_s_1thread": info["bytes"] / t / 1e6,
            "views_per_s_1thread": rows / t}


def projection(mfu: float, views_bytes: dict[str, float], batch: int, gpus_per_node: int, views: int) -> list[dict]:
    """ViT-L teacher, ViT-L/H/g students, 16x224x224 clips, patch 16, tubelet 2, default multiblock masks.
    Per GPU: one H200 with the storage to itself, and one of `gpus_per_node` sharing the node's storage."""
    grid = TokenGrid.from_clip(num_frames=16, img_size=224, patch_size=16, tubelet_size=2)
    gen = build_mask_generator("multiblock", grid=grid)
    g = torch.Generator().manual_seed(0)
    draws = [mask_counts(gen(16, g)) for _ in range(50)]
    teacher = ENCODER_SIZES["large"]
    patch_dim = 3 * 2 * 16 * 16
    n = grid.num_tokens
    t_fwd = encoder_forward_flops(teacher, n_tokens=n, n_keep=n, patch_dim=patch_dim)
    rate = H200_BF16_PEAK * mfu
    rows = []
    for size in ("large", "huge", "giant"):
        spec = ENCODER_SIZES[size]
        cached = statistics.fmean(student_step_flops(spec, DEFAULT_PREDICTOR, None, target_dim=teacher.embed_dim,
                                                     n_tokens=n, patch_dim=patch_dim, masks=c).train_step
                                  for c in draws)
        online = cached + t_fwd
        t_on, t_c = online / rate, cached / rate  # seconds per clip
        for dtype, nbytes in views_bytes.items():
            row = {"student": {"large": "ViT-L", "huge": "ViT-H", "giant": "ViT-g"}[size], "teacher": "ViT-L",
                   "dtype": dtype,
                   "teacher_share": t_fwd / online, "online_ms_clip": t_on * 1e3, "cached_ms_clip": t_c * 1e3,
                   "teacher_ms_clip": (t_on - t_c) * 1e3, "MB_clip": nbytes / 1e6, "MB_step": nbytes * batch / 1e6,
                   "TB_per_1M_clips": nbytes * views / 1e6, "breakeven_GB_s": nbytes / t_on / 1e9,
                   "free_GB_s": nbytes / t_c / 1e9}
            for name, bw in BANDWIDTHS.items():
                row[f"speedup_{name}"] = t_on / max(t_c, nbytes / bw)
                row[f"speedup_{name}_{gpus_per_node}gpu"] = t_on / max(t_c, nbytes / (bw / gpus_per_node))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="shard set (default: make a synthetic one, 64x64)")
    p.add_argument("--teacher", help="exported teacher (default: train a tiny one for --teacher-steps)")
    p.add_argument("--teacher-steps", type=int, default=20)
    p.add_argument("--videos", type=int, default=32, help="synthetic videos when no --shards")
    p.add_argument("--views", type=int, default=4, help="cached views per sample (K)")
    p.add_argument("--steps", type=int, default=20, help="student steps per run")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--loss-batches", type=int, default=2, help="batches for the same-weights loss comparison")
    p.add_argument("--read-repeats", type=int, default=3)
    p.add_argument("--large-rows", type=int, default=24, help="ViT-L-sized rows for the read measurement")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation on the H200")
    p.add_argument("--step-batch", type=int, default=48, help="clips per GPU per step in the projection")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs sharing a node's storage in the projection")
    p.add_argument("--proj-views", type=int, default=8, help="cached views per clip in the projection")
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="default benchmarks/results/targets.json")
    a = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="salt-targets-") if not a.work else None
    work = Path(a.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    shards = Path(a.shards) if a.shards else make_data(work, a.videos)
    teacher = Path(a.teacher) if a.teacher else make_teacher(work, shards, a.teacher_steps)

    caches, precompute_s = {}, {}
    for d in DTYPES:
        caches[d] = work / "cache" / d
        precompute_s[d] = precompute(teacher, shards, caches[d], a.views, d)

    runs = {"online": student_run(shards, work / "runs" / "online", a.steps, a.log_every,
                                  ["--teacher", str(teacher)])}
    for d in DTYPES:
        runs[d] = student_run(shards, work / "runs" / d, a.steps, a.log_every, [f"--targets.cache={caches[d]}"])
    same = same_weights_losses(shards, caches, a.loss_batches)

    metas = {d: json.loads((caches[d] / "meta.json").read_text()) for d in DTYPES}
    measured = []
    for name, r in runs.items():
        d = "fp32" if name == "online" else name
        measured.append({"targets": "online teacher" if name == "online" else f"cache {name}", **r,
                         "loss_vs_fp32_cache": r["final_loss"] - runs["fp32"]["final_loss"] if name != "online" else None,
                         "same_weights_loss": same[d] if name != "online" else None,
                         "same_weights_rel_diff": (same[d] - same["fp32"]) / same["fp32"] if name != "online" else None})
    storage = []
    for d in DTYPES:
        c = metas[d]["counts"]
        rd = read_throughput(caches[d], 16, a.read_repeats)
        big = large_row_read(work, d, a.large_rows)
        storage.append({"dtype": d, "bytes_per_clip": c["bytes_per_clip"], "bytes_per_view": c["bytes_per_view"],
                        "raw_bytes_per_view": metas[d]["storage"]["raw_bytes_per_view"],
                        "zstd_ratio": c["compression_ratio"], "precompute_s": precompute_s[d], **rd,
                        "vitl_bytes_per_view": big["bytes_per_view"], "vitl_read_MB_s": big["read_MB_s_1thread"],
                        "vitl_views_per_s": big["views_per_s_1thread"]})
    # projection: ViT-L row bytes as stored (zstd on layer-normed Gaussian rows: close to raw)
    proj = projection(a.mfu, {s["dtype"]: s["vitl_bytes_per_view"] for s in storage if s["dtype"] != "fp16"},
                      a.step_batch, a.gpus_per_node, a.proj_views)

    meta = metas["fp32"]
    print(f"\n== measured on this machine: tiny teacher ({meta['targets']['width']} wide) and student, "
          f"{meta['targets']['tokens']} tokens, batch 16, K={a.views} views, {meta['counts']['samples']} clips ==")
    print(format_table(measured, ["targets", "steps_per_s", "clips_per_s", "data_wait", "tflops", "final_loss",
                                  "loss_vs_fp32_cache", "same_weights_loss", "same_weights_rel_diff"]))
    print("(online vs cache rows differ in views -- online: a fresh random view per epoch, cache: one of K -- and in "
          "predictor init, as loading the teacher draws from the RNG; compare final losses among the cache rows)")
    print("\n== cache size and reads (page cache, 2 reader threads; vitl_*: 1568x1024 rows, 1 thread) ==")
    print(format_table(storage, ["dtype", "bytes_per_clip", "bytes_per_view", "raw_bytes_per_view", "zstd_ratio",
                                 "read_MB_s", "views_per_s", "vitl_bytes_per_view", "vitl_read_MB_s",
                                 "vitl_views_per_s"]))
    print(f"\n== projected (salt.flops): ViT-L teacher on one H200, {H200_BF16_PEAK / 1e12:.0f} TFLOP/s bf16 peak at "
          f"MFU {a.mfu:.0%}, 16x224x224 clips (1568 tokens), {a.step_batch} clips/step; reads overlap compute; "
          f"NVMe {BANDWIDTHS['nvme'] / 1e9:g} GB/s, network FS {BANDWIDTHS['netfs'] / 1e9:g} GB/s per node, alone or "
          f"shared by {a.gpus_per_node} GPUs; TB for 1M clips x {a.proj_views} views ==")
    n = a.gpus_per_node
    print(format_table(proj, ["student", "dtype", "teacher_share", "online_ms_clip", "cached_ms_clip", "MB_clip",
                              "MB_step", "TB_per_1M_clips", "breakeven_GB_s", "free_GB_s", "speedup_nvme",
                              "speedup_netfs", f"speedup_nvme_{n}gpu", f"speedup_netfs_{n}gpu"]))
    t_teacher = proj[0]["teacher_ms_clip"] / 1e3
    print(f"precompute: {t_teacher * 1e6 * a.proj_views / 3600:.1f} H200-hours per 1M clips x {a.proj_views} views "
          f"(the online teacher spends {t_teacher * 1e6 / 3600:.2f} h per 1M clips per epoch): the cache saves compute "
          f"only for runs of more than {a.proj_views} epochs")
    config = {**vars(a), "shards": str(shards), "teacher": str(teacher), "h200_bf16_peak": H200_BF16_PEAK,
              "bandwidths_B_s": BANDWIDTHS, "cache_meta_fp32": {k: meta[k] for k in ("targets", "views", "geometry")}}
    path = write_result(a.json, "targets", config, measured, extra={"storage": storage, "projection": proj,
                                                                     "seconds": time.perf_counter() - t_start})
    print(f"\nwrote {path} ({time.perf_counter() - t_start:.0f} s)")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
