"""`--stage NAME` -> the objective class that trains it.

Adding a stage: one file under salt/objectives/ with an `Objective` subclass, and one line in
salt/stage_names.py, where the classes are named by import path: the config checks stage names there
without importing torch models, and the layering reads one way (config -> stage_names; stages ->
objectives -> config).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from salt.config import Config
    from salt.objectives.base import Objective

from salt.build import build_masks
from salt.stage_names import STAGE_OBJECTIVES, STAGES

__all__ = ["STAGES", "STAGE_OBJECTIVES", "build_objective", "objective_class", "steps_for_budget"]


def objective_class(stage: str) -> type[Objective]:
    if stage not in STAGE_OBJECTIVES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    module, name = STAGE_OBJECTIVES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def build_objective(cfg: Config, *, teacher_width: int | None = None, num_classes: int | None = None) -> Objective:
    """The run's stage objective, built from its config (see Objective.from_config)."""
    return objective_class(cfg.stage).from_config(cfg, teacher_width=teacher_width, num_classes=num_classes)


def steps_for_budget(cfg: Config, budget: float, draws: int = 50, num_classes: int = 10) -> int:
    """Optimizer steps of `cfg`'s stage that spend `budget` model FLOPs (analytic FLOPs of the built
    objective, on the meta device, averaged over `draws` mask batches): matched-compute baselines."""
    with torch.device("meta"):
        objective = build_objective(cfg, num_classes=num_classes)
    gen, g = build_masks(cfg), torch.Generator().manual_seed(0)
    clips = cfg.data.batch_size * cfg.data.views_per_sample * cfg.optim.accumulation
    per_clip = sum(objective.step_flops(gen(clips, g)).train_step for _ in range(draws)) / draws
    return max(1, round(budget / (per_clip * clips)))
