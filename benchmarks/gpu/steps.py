"""Training-step throughput of one stage at one batch size, in this process: what the GPU suite runs.

A step here is the trainer's (salt.engine.trainer): uint8 clips normalised on the device, the stage's
objective under DeepSpeed with the run's ZeRO config and autocast, backward, optimizer step, the
stage's after-step hook. Inputs are synthetic (the loader is measured on its own), masks are the
config's, drawn on the CPU as the loader draws them; cached targets are random tensors of the cache's
shape. An out-of-memory step is reported as not fitting, and the memory is given back.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace

import torch

from salt.build import build_masks, encoder_info, token_grid
from salt.config import Config
from salt.data.augment import PixelNorm
from salt.engine.deepspeed_setup import TrainableParts, autocast_dtype, load_ds_config, reconcile
from salt.metrics import peak_tflops
from salt.models.blocks import set_block_options
from salt.models.io import export_encoder
from salt.models.sizes import get_spec
from salt.optim import build_optimizer
from salt.stages import build_objective


@dataclass(frozen=True)
class StepCase:
    """One measurement: a stage ("teacher", "student", "student-cached", "vjepa") of a model size."""

    stage: str
    size: str
    checkpointing: bool = False
    compile: bool = False

    @property
    def variant(self) -> str:
        return "+".join([p for p, on in (("compile", self.compile), ("ckpt", self.checkpointing)) if on] or ["eager"])


def _stage_config(base: Config, case: StepCase, batch: int, teacher_path: str) -> Config:
    stage = "student" if case.stage.startswith("student") else case.stage
    cfg = replace(base, stage=stage, model=replace(base.model, size=case.size, depth=base.model.depth
                                                   if case.size == base.model.size else None,
                                                   grad_checkpointing=case.checkpointing),
                  data=replace(base.data, batch_size=batch),
                  run=replace(base.run, compile=case.compile))
    if stage == "student":
        cfg = replace(cfg, teacher=replace(cfg.teacher, path=teacher_path, dtype="bf16"),
                      targets=replace(cfg.targets, cache="synthetic" if case.stage == "student-cached" else ""))
    return cfg


def export_random_teacher(base: Config, size: str, folder: str) -> str:
    """A randomly initialised teacher of `size` for the online student (its speed does not depend on
    what it learned)."""
    from salt.build import build_model_encoder

    cfg = replace(base, model=replace(base.model, size=size,
                                      depth=base.model.depth if size == base.model.size else None))
    encoder = build_model_encoder(cfg)
    info = encoder_info(replace(cfg, stage="teacher"))
    return str(export_encoder(encoder, info, folder).parent)


def measure_step(base: Config, case: StepCase, batch: int, device: torch.device, *, steps: int, warmup: int,
                 teacher_path: str = "", peak: tuple[float, str] | None = None) -> dict:
    """Median step time of `steps` steps after `warmup` ones (compilation happens there). Returns
    {"fits": False} when the batch does not fit in memory, and {"error": ...} when the step fails
    otherwise (the suite goes on with the next measurement)."""
    head = {"stage": case.stage, "size": case.size, "variant": case.variant, "batch": batch}
    engine = objective = pixels = targets = clips = out = None
    try:
        import deepspeed

        cfg = _stage_config(base, case, batch, teacher_path)
        grid = token_grid(cfg)
        teacher_width = get_spec(case.size, cfg.model.depth).embed_dim if case.stage == "student-cached" else None
        objective = build_objective(cfg, teacher_width=teacher_width, num_classes=None).to(device)
        set_block_options(objective, checkpointing=case.checkpointing, compile=case.compile)
        ds = reconcile(load_ds_config(cfg.run.deepspeed_config), cfg, world=1)
        engine, _, _, _ = deepspeed.initialize(model=TrainableParts(objective),
                                               optimizer=build_optimizer(objective.trainable_modules(), cfg.optim),
                                               config=ds)
        masks_of = build_masks(cfg) if objective.uses_masks else None
        norm = PixelNorm(cfg.data.mean, cfg.data.std)
        gen = torch.Generator().manual_seed(0)
        # (B, T, H, W, 3) uint8 clips, made once on the device: the loader's hand-off
        pixels = torch.randint(0, 256, (batch, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, 3),
                               dtype=torch.uint8, generator=gen).to(device)
        targets = (torch.randn(batch, grid.num_tokens, teacher_width, generator=gen).to(device)
                   if teacher_width else None)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, flops = [], []
        for i in range(warmup + steps):
            masks = masks_of(batch, gen) if masks_of else None
            t0 = time.perf_counter()
            clips = norm(pixels)  # (B, 3, T, H, W) float32
            out = engine(clips, [m.to(device, non_blocking=True) for m in masks] if masks else None,
                         targets=targets)
            engine.backward(out.loss)
            engine.step()
            objective.after_step(i, warmup + steps)
            float(out.loss.detach())  # waits for the step
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                flops.append(objective.step_flops(masks, cached_targets=targets is not None).train_step)
        step_s = sorted(times)[len(times) // 2]
        flops_per_clip = sum(flops) / len(flops)  # masks differ per step
        peak_tf, peak_from = peak or peak_tflops(device, autocast_dtype(ds), None)
        achieved = flops_per_clip * batch / step_s / 1e12
        return {**head, "fits": True, "step_s": step_s, "clips_per_s": batch / step_s, "tflops": achieved,
                "mfu": achieved / peak_tf, "peak_tflops": peak_tf, "peak_from": peak_from,
                "flops_per_clip": flops_per_clip,
                "memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    except torch.OutOfMemoryError:
        return {**head, "fits": False}
    except Exception as e:  # noqa: BLE001  (one failing case must not lose the suite's other rows)
        if "out of memory" in str(e).lower():  # an OOM wrapped by the compiler or a library
            return {**head, "fits": False}
        return {**head, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
    finally:
        if engine is not None:
            try:
                engine.destroy()
            except Exception:  # noqa: BLE001
                pass
        del engine, objective, pixels, targets, clips, out
        if case.compile:
            torch._dynamo.reset()  # compiled code is shared by every module.compile(): start each case afresh
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(base: Config, case: StepCase, device: torch.device, *, batches: list[int], steps: int,
                  warmup: int, teacher_path: str, deadline: float, peak: tuple[float, str] | None = None
                  ) -> list[dict]:
    """Measure at each batch size in increasing order until one does not fit or time runs out; the last
    fitting one is the largest that fits (of those tried)."""
    rows = []
    for b in batches:
        if time.monotonic() > deadline:
            rows.append({"stage": case.stage, "size": case.size, "variant": case.variant, "batch": b,
                         "skipped": "time budget"})
            break
        row = measure_step(base, case, b, device, steps=steps, warmup=warmup, teacher_path=teacher_path,
                           peak=peak)
        rows.append(row)
        if not row.get("fits"):
            break
    return rows
