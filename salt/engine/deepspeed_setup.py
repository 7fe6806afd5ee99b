"""The DeepSpeed engine of a run: its JSON config reconciled with the run config, and the module it wraps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salt.config import Config, ConfigError
from salt.objectives.base import Objective
from salt.precision import Precision, torch_dtype

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_ds_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and (REPO_ROOT / path).exists():
        p = REPO_ROOT / path
    if not p.exists():
        shipped = ", ".join(sorted(x.name for x in (REPO_ROOT / "ds_configs").glob("*.json")))
        raise ConfigError(f"DeepSpeed config {path} not found (shipped in ds_configs/: {shipped})")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"DeepSpeed config {p} is not valid JSON: {e}") from None


def reconcile(ds: dict[str, Any], cfg: Config, world: int) -> dict[str, Any]:
    """Fill the batch keys from the run config; where the JSON sets them they must agree, and the
    error says which file and key to change. The run config is the source of truth for batch sizes."""
    micro = cfg.data.batch_size * cfg.data.views_per_sample
    accum = cfg.optim.accumulation
    want = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
            "train_batch_size": micro * accum * world}
    sources = {"train_micro_batch_size_per_gpu": "data.batch_size x views per sample",
               "gradient_accumulation_steps": "optim.accumulation",
               "train_batch_size": f"data.batch_size x views x optim.accumulation x {world} ranks"}
    out = dict(ds)
    for key, value in want.items():
        if key in ds and ds[key] != value:
            raise ConfigError(
                f"DeepSpeed config {cfg.run.deepspeed_config} sets {key}={ds[key]}, but the run config gives "
                f"{value} ({sources[key]}). Remove {key} from the JSON (the run config fills it in) or change "
                f"{sources[key].split(' x ')[0]} to match.")
        out[key] = value
    clip = ds.get("gradient_clipping")
    if clip is not None and float(clip) != cfg.optim.grad_clip:
        raise ConfigError(f"DeepSpeed config {cfg.run.deepspeed_config} sets gradient_clipping={clip} but "
                          f"optim.grad_clip={cfg.optim.grad_clip}; make them equal (or drop it from the JSON)")
    out["gradient_clipping"] = cfg.optim.grad_clip
    out.setdefault("steps_per_print", 10**9)
    out.setdefault("wall_clock_breakdown", False)
    for key in ("optimizer", "scheduler"):
        if key in out:
            raise ConfigError(f"DeepSpeed config {cfg.run.deepspeed_config} sets '{key}'; salt builds AdamW and its "
                              f"schedules from the run config (optim.*): remove '{key}' from the JSON")
    return out


def autocast_dtype(ds: dict[str, Any]) -> torch.dtype | None:
    """The compute precision the DeepSpeed config asks for (torch_autocast, or bf16/fp16 weights)."""
    ac = ds.get("torch_autocast", {})
    if ac.get("enabled"):
        try:
            return torch_dtype(ac.get("dtype", "bfloat16"))
        except ValueError as e:
            raise ConfigError(f"DeepSpeed config torch_autocast.dtype: {e}") from None
    if ds.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    return None


def with_precision(ds: dict[str, Any], precision: Precision) -> dict[str, Any]:
    """The DeepSpeed config computing in `precision`: torch_autocast on with its dtype (the JSON's other
    autocast keys kept), or off for fp32 (and DeepSpeed's bf16/fp16 weight modes off with it)."""
    out = dict(ds)
    autocast = dict(out.get("torch_autocast", {}))
    if precision.autocast is None:
        autocast["enabled"] = False
        for key in ("bf16", "fp16"):
            if out.get(key, {}).get("enabled"):
                out[key] = {**out[key], "enabled": False}
    else:
        autocast.update(enabled=True, dtype={"bf16": "bfloat16", "fp16": "float16"}[precision.name])
    out["torch_autocast"] = autocast
    return out


def zero_stage(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(ds: dict[str, Any]) -> bool:
    """Whether ZeRO keeps the optimizer state on the CPU (ZeRO-Offload): it then steps there."""
    device = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device in ("cpu", "nvme")


class TrainableParts(nn.Module):
    """What DeepSpeed wraps: only the trained modules. The objective (with its frozen teacher or EMA
    target) is held outside the module tree, so DeepSpeed never casts, partitions or saves those."""

    def __init__(self, objective: Objective):
        super().__init__()
        self.parts = nn.ModuleList(objective.trainable_modules())
        object.__setattr__(self, "objective", objective)

    def forward(self, clips: torch.Tensor, masks, targets: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        return self.objective(clips, masks, targets=targets, labels=labels)

    def train(self, mode: bool = True):
        super().train(mode)
        self.objective.train(mode)  # keeps a frozen teacher in eval mode
        return self
