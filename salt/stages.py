"""`--stage NAME` -> the objective class that trains it.

Adding a stage: one file under salt/objectives/ with an `Objective` subclass, and one line here. The
classes are named by import path so that the config can list the stages without importing torch models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from salt.config import Config
    from salt.objectives.base import Objective

STAGE_OBJECTIVES: dict[str, str] = {
    "teacher": "salt.objectives.teacher:TeacherObjective",
    "student": "salt.objectives.student:StudentObjective",
    "vjepa": "salt.objectives.vjepa:VJEPAObjective",
    "supervised": "salt.objectives.supervised:SupervisedObjective",
}
STAGES = tuple(STAGE_OBJECTIVES)


def objective_class(stage: str) -> type[Objective]:
    if stage not in STAGE_OBJECTIVES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    module, name = STAGE_OBJECTIVES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def build_objective(cfg: Config, *, teacher_width: int | None = None, num_classes: int | None = None) -> Objective:
    """The run's stage objective, built from its config (see Objective.from_config)."""
    return objective_class(cfg.stage).from_config(cfg, teacher_width=teacher_width, num_classes=num_classes)
