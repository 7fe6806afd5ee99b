"""AdamW parameter groups and the learning-rate / weight-decay schedules (pure functions of the step)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

from salt.config import OptimConfig


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: biases, norms, position tables and tokens (1-D params)
    and anything named *_token are excluded."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim <= 1 or name.endswith(".bias") or "token" in name.rsplit(".", 1)[-1]:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "apply_wd": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


@dataclass(frozen=True)
class LrScale:
    global_batch: int  # clips per optimizer step: ranks x per-rank batch x accumulation
    factor: float  # effective rate / configured rate
    rule: str

    def describe(self, cfg: OptimConfig) -> str:
        why = {"linear": f"x {self.global_batch}/{cfg.reference_batch}",
               "sqrt": f"x sqrt({self.global_batch}/{cfg.reference_batch})", "none": "as given"}[self.rule]
        return (f"lr {cfg.lr:.3g} at global batch {cfg.reference_batch}, {self.rule} rule {why} -> peak "
                f"{cfg.lr * self.factor:.3g} (start {cfg.start_lr * self.factor:.3g}, final "
                f"{cfg.final_lr * self.factor:.3g}) at global batch {self.global_batch}")


def lr_scale(cfg: OptimConfig, global_batch: int) -> LrScale:
    """How the configured rates (given at cfg.reference_batch) scale to `global_batch`."""
    ratio = global_batch / cfg.reference_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[cfg.lr_scaling]
    return LrScale(global_batch, factor, cfg.lr_scaling)


def effective_optim(cfg: OptimConfig, global_batch: int) -> OptimConfig:
    """cfg with its three rates at `global_batch` (the schedule the run follows)."""
    f = lr_scale(cfg, global_batch).factor
    return replace(cfg, lr=cfg.lr * f, start_lr=cfg.start_lr * f, final_lr=cfg.final_lr * f,
                   reference_batch=global_batch, lr_scaling="none")


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup from start_lr to lr, then cosine to final_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def wd_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Cosine from weight_decay to final_weight_decay over the run."""
    progress = min(1.0, step / max(1, total))
    return cfg.final_weight_decay + 0.5 * (cfg.weight_decay - cfg.final_weight_decay) * (1 + math.cos(math.pi * progress))


OPTIMIZERS = ("cpu_adam", "fused", "torch")


def optimizer_kind(device: torch.device, offload: bool) -> str:
    """Which AdamW steps the weights: DeepSpeed's vectorised CPU Adam where ZeRO-Offload keeps the fp32
    partitions on the CPU (torch's AdamW there runs a Python loop of small ops per tensor), torch's fused
    kernel on a GPU, torch's default AdamW on a CPU."""
    if offload:
        return "cpu_adam"
    return "fused" if device.type == "cuda" else "torch"


def build_optimizer(modules: Iterable[nn.Module], cfg: OptimConfig, *, device: torch.device | None = None,
                    offload: bool = False) -> torch.optim.Optimizer:
    """AdamW over `modules` (decoupled weight decay in every kind: the schedules set each group's)."""
    groups = param_groups(modules, cfg.weight_decay)
    kind = optimizer_kind(device or torch.device("cpu"), offload)
    if kind == "cpu_adam":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=cfg.start_lr, betas=cfg.betas, eps=cfg.eps, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=cfg.start_lr, betas=cfg.betas, eps=cfg.eps, fused=kind == "fused" or None)


def apply_schedule(optimizer: torch.optim.Optimizer, step: int, total: int, cfg: OptimConfig) -> tuple[float, float]:
    lr, wd = lr_at(step, total, cfg), wd_at(step, total, cfg)
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if group.get("apply_wd", i == 0):  # group 0 holds the decayed weights (param_groups above)
            group["weight_decay"] = wd
    return lr, wd
