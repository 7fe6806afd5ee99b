"""Where one batch of salt's DALI loader spends its time, stage by stage, run one stage at a time.

The loader overlaps its stages (DALI decodes ahead in its own threads); here each runs alone on the
same batches, so the times add up to what one batch costs the machine: plan and read the samples'
bytes, decode in DALI, cut the views (crop, resize, flip: into the uint8 batch, which is the
hand-off on the CPU), move to the training device and normalise there, draw the masks.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from salt.data.config import LoaderConfig
from salt.data.dali_loader import BatchFeeder, build_pipeline, resolve_device, views_from_frames
from salt.data.plan import BatchPlanner
from salt.data.shardset import ShardSet
from salt.masks import DEFAULT_MULTIBLOCK, TokenGrid, build_mask_generator

STAGES = ("read", "decode", "crop/resize/flip", "hand-off + normalise", "masks")


class _Queue:
    """An external source that hands DALI the batch the profiler put in, when DALI asks for it."""

    def __init__(self):
        self.item: tuple | None = None

    def __call__(self) -> tuple:
        item, self.item = self.item, None
        if item is None:
            raise RuntimeError("profile: DALI asked for a batch that was not read yet")
        return item


def decode_only_pipeline(cfg: LoaderConfig, device: str, source=None, read_ahead: int = 2
                         ) -> tuple[BatchFeeder, object]:
    """salt's feed (the loader's own samples and start frames, read ahead as the loader reads them) and a
    built DALI pipeline that only decodes them. source: what DALI calls for a batch (default: the feeder)."""
    planner = BatchPlanner(ShardSet(cfg.shards, verify=False), cfg, 0, 1)
    decodes, per_decode = cfg.view_layout()
    feeder = BatchFeeder(planner, planner.positions(0, 0), decodes, per_decode, with_views=False, depth=read_ahead)
    pipe = build_pipeline(cfg, device, source or feeder, cfg.batch_size, decodes, per_decode,
                          0 if device == "gpu" else None, with_views=False)
    pipe.build()
    return feeder, pipe


def profile_batches(cfg: LoaderConfig, batches: int, patch_size: int = 16, tubelet_size: int = 2) -> dict:
    """Median seconds per batch of each stage over `batches` batches (after one warm-up batch)."""
    device = resolve_device(cfg.device)
    if cfg.views_in_dali(device):
        raise ValueError("the stage profile covers the CPU loader with the uint8 hand-off "
                         "(on a GPU the views are cut inside DALI; use the GPU suite)")
    cfg = replace(cfg, prefetch=1)  # DALI asks for one batch per run: the one just read
    queue = _Queue()
    feeder, pipe = decode_only_pipeline(cfg, "cpu", queue, read_ahead=0)  # the read timed on its own
    per_decode = cfg.view_layout()[1]
    grid = TokenGrid.from_clip(num_frames=cfg.num_frames, img_size=cfg.crop_size, patch_size=patch_size,
                               tubelet_size=tubelet_size)
    masks = build_mask_generator("multiblock", grid=grid, blocks=DEFAULT_MULTIBLOCK)
    norm = cfg.pixel_norm()
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    for b in range(batches + 1):
        marks = [time.perf_counter()]
        queue.item = feeder()
        plan = feeder.in_flight.popleft()
        marks.append(time.perf_counter())
        outputs = pipe.run()
        marks.append(time.perf_counter())
        video = views_from_frames(outputs, plan, per_decode, cfg)  # (V * B, T, S, S, 3) uint8
        marks.append(time.perf_counter())
        norm(video.to("cpu"))
        marks.append(time.perf_counter())
        masks(video.shape[0], torch.Generator().manual_seed(b))
        marks.append(time.perf_counter())
        if b:  # the first batch warms up
            for s, t0, t1 in zip(STAGES, marks, marks[1:], strict=False):
                times[s].append(t1 - t0)
    med = {s: float(np.median(v)) for s, v in times.items()}
    total = sum(med.values())
    return {"stages_s": med, "total_s": total, "batches": batches, "clips_per_batch": cfg.batch_size,
            "views_per_batch": cfg.batch_size * cfg.views_per_sample,
            "serial_clips_per_s": cfg.batch_size / total}


def profile_rows(prof: dict) -> list[dict]:
    total = prof["total_s"]
    return [{"stage": s, "ms_per_batch": 1000 * t, "share_pct": 100 * t / total}
            for s, t in prof["stages_s"].items()] + [
        {"stage": "total (one after another)", "ms_per_batch": 1000 * total, "share_pct": 100.0}]


def step_budget(clips_per_s: float, batch_size: int, views: int, target_step_ms: float) -> dict:
    """What a training step of `target_step_ms` needs from the loader, per process: is it loader-bound?"""
    needed = batch_size / (target_step_ms / 1000)
    return {"target_step_ms": target_step_ms, "clips_per_s_needed": needed, "views_per_s_needed": needed * views,
            "clips_per_s_loader": clips_per_s, "headroom": clips_per_s / needed,
            "loader_bound": clips_per_s < needed}
