"""Training-step throughput of one stage at several batch sizes, in this process: what the GPU suite runs.

A step here is the trainer's (salt.engine.trainer): uint8 clips normalised on the device, the stage's
objective under DeepSpeed with the run's ZeRO config and autocast, backward, optimizer step, the
stage's after-step hook. Inputs are synthetic (the loader is measured on its own), masks are the
config's, drawn on the CPU as the loader draws them; cached targets are random tensors of the cache's
shape. Each case builds its model once, on the device (no initialisation on the CPU, no teacher
exported and loaded again: the online student's teacher is a random encoder made in memory), then tries
its batch sizes in increasing order until one does not fit.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace

import torch

from salt.build import build_masks, build_model_encoder, token_grid
from salt.config import Config
from salt.data.augment import PixelNorm
from salt.engine.deepspeed_setup import (
    TrainableParts,
    autocast_dtype,
    load_ds_config,
    offloads_optimizer,
    reconcile,
    with_precision,
)
from salt.models import build_predictor
from salt.models.blocks import set_block_options
from salt.models.sizes import get_spec
from salt.objectives import StudentObjective
from salt.optim import build_optimizer
from salt.precision import resolve_precision
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


def stage_config(base: Config, case: StepCase, batch: int) -> Config:
    stage = "student" if case.stage.startswith("student") else case.stage
    return replace(base, stage=stage, model=replace(base.model, size=case.size, depth=base.model.depth
                                                    if case.size == base.model.size else None,
                                                    grad_checkpointing=case.checkpointing),
                   data=replace(base.data, batch_size=batch), run=replace(base.run, compile=case.compile),
                   teacher=replace(base.teacher, path="in-memory" if stage == "student" else "", dtype="bf16"),
                   targets=replace(base.targets, cache="synthetic" if case.stage == "student-cached" else ""))


def build_case(cfg: Config, case: StepCase, device: torch.device):
    """The objective on `device`, built there: an online student gets a random frozen teacher of its size."""
    with torch.device(device):
        if case.stage == "student":
            student = build_model_encoder(cfg)
            teacher = build_model_encoder(cfg)
            predictor = build_predictor(grid=token_grid(cfg), in_dim=student.embed_dim, out_dim=teacher.embed_dim,
                                        spec=cfg.predictor, use_rope=cfg.model.use_rope)
            return StudentObjective(student, predictor, teacher, teacher_dtype=torch.bfloat16)
        width = get_spec(case.size, cfg.model.depth).embed_dim if case.stage == "student-cached" else None
        return build_objective(cfg, teacher_width=width, num_classes=None)


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def measure_case(base: Config, case: StepCase, device: torch.device, *, batches: list[int], steps: int,
                 warmup: int, deadline: float, peak: tuple[float, str] | None = None) -> list[dict]:
    """Rows for each batch size in increasing order, until one does not fit ({"fits": False}), time runs out
    ({"skipped": ...}) or the case fails ({"error": ...}, one line). Median step time of `steps` steps after
    `warmup` ones (compilation happens there)."""
    head = {"stage": case.stage, "size": case.size, "variant": case.variant}
    rows: list[dict] = []
    engine = objective = None
    t_build = time.perf_counter()
    try:
        import deepspeed

        cfg = stage_config(base, case, max(batches))
        ds_json = load_ds_config(cfg.run.deepspeed_config)
        precision = resolve_precision(cfg.run.precision, device, autocast_dtype(ds_json))
        ds = with_precision(reconcile(ds_json, cfg, world=1), precision)
        objective = build_case(cfg, case, device)
        set_block_options(objective, checkpointing=case.checkpointing, compile=case.compile)
        optimizer = build_optimizer(objective.trainable_modules(), cfg.optim, device=device,
                                    offload=offloads_optimizer(ds))
        engine, _, _, _ = deepspeed.initialize(model=TrainableParts(objective), optimizer=optimizer, config=ds)
        build_s = time.perf_counter() - t_build
        masks_of = build_masks(cfg) if objective.uses_masks else None
        norm = PixelNorm(cfg.data.mean, cfg.data.std)
        width = get_spec(case.size, cfg.model.depth).embed_dim if case.stage == "student-cached" else None
        grid = token_grid(cfg)
        for batch in batches:
            if time.monotonic() > deadline:
                rows.append({**head, "batch": batch, "skipped": "time budget"})
                break
            row = _measure_batch(engine, objective, masks_of, norm, cfg, batch, grid.num_tokens, width, device,
                                 steps=steps, warmup=warmup)
            row = {**head, "batch": batch, "build_s": build_s, "precision": precision.name, **row}
            if row.get("fits") and peak:
                row.update(peak_tflops=peak[0], peak_from=peak[1], mfu=row["tflops"] / peak[0])
            rows.append(row)
            if not row.get("fits"):
                break
    except Exception as e:  # noqa: BLE001  (one failing case must not lose the suite's other rows)
        rows.append({**head, "batch": max(batches), **({"fits": False} if _oom(e) else {"error": _first_line(e)})})
    finally:
        if engine is not None:
            try:
                engine.destroy()
            except Exception:  # noqa: BLE001
                pass
        del engine, objective
        if case.compile:
            torch._dynamo.reset()  # compiled code is shared by every module.compile(): start each case afresh
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _measure_batch(engine, objective, masks_of, norm: PixelNorm, cfg: Config, batch: int, tokens: int,
                   width: int | None, device: torch.device, *, steps: int, warmup: int) -> dict:
    pixels = targets = out = None
    try:
        gen = torch.Generator().manual_seed(batch)
        # (B, T, H, W, 3) uint8 clips, made once on the device: the loader's hand-off
        pixels = torch.randint(0, 256, (batch, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, 3),
                               dtype=torch.uint8, generator=gen).to(device)
        targets = torch.randn(batch, tokens, width, generator=gen).to(device) if width else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, flops = [], []
        for i in range(warmup + steps):
            masks = masks_of(batch, gen) if masks_of else None
            t0 = time.perf_counter()
            out = engine(norm(pixels), [m.to(device, non_blocking=True) for m in masks] if masks else None,
                         targets=targets)
            engine.backward(out.loss)
            engine.step()
            objective.after_step(i, warmup + steps)
            float(out.loss.detach())  # waits for the step: the time is the device's
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                flops.append(objective.step_flops(masks, cached_targets=targets is not None).train_step)
        step_s = sorted(times)[len(times) // 2]
        achieved = sum(flops) / len(flops) * batch / step_s / 1e12  # masks differ per step: their mean FLOPs
        return {"fits": True, "step_s": step_s, "clips_per_s": batch / step_s, "tflops": achieved,
                "flops_per_clip": sum(flops) / len(flops),
                "memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    except Exception as e:  # noqa: BLE001
        if _oom(e):
            return {"fits": False}
        return {"error": _first_line(e)}
    finally:
        del pixels, targets, out
        if device.type == "cuda":
            torch.cuda.empty_cache()
