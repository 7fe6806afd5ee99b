"""The stages `--stage` names, and the objective class of each by import path: a leaf module, so that the
config tree can check a stage's name without importing the objectives (which import the config)."""

from __future__ import annotations

STAGE_OBJECTIVES: dict[str, str] = {
    "teacher": "salt.objectives.teacher:TeacherObjective",
    "student": "salt.objectives.student:StudentObjective",
    "vjepa": "salt.objectives.vjepa:VJEPAObjective",
    "supervised": "salt.objectives.supervised:SupervisedObjective",
}
STAGES = tuple(STAGE_OBJECTIVES)
