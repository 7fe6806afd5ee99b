"""Training objectives: teacher (pixels), student (frozen-teacher latents), the V-JEPA EMA baseline, and the
supervised ceiling."""

from salt.objectives.base import Objective
from salt.objectives.common import ObjectiveOutput, as_mask_list, freeze
from salt.objectives.latent import compute_teacher_targets, latent_prediction_losses
from salt.objectives.pixel_targets import patchify, pixel_targets
from salt.objectives.student import StudentObjective
from salt.objectives.supervised import SupervisedObjective
from salt.objectives.teacher import PIXEL_LOSSES, TeacherObjective
from salt.objectives.vjepa import VJEPAObjective, momentum_schedule

__all__ = [
    "PIXEL_LOSSES", "Objective", "ObjectiveOutput", "StudentObjective", "SupervisedObjective", "TeacherObjective", "VJEPAObjective", "as_mask_list",
    "compute_teacher_targets", "freeze", "latent_prediction_losses", "momentum_schedule", "patchify",
    "pixel_targets",
]
