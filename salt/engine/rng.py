"""A rank's random-number state, as a checkpoint keeps it: the CPU generator, and on a GPU the CUDA
generator of the rank's device (drop-path and dropout draw there), so a resumed run draws what the
uninterrupted one would have drawn."""

from __future__ import annotations

import torch

# Added to run.seed for the weights of a stage fed by a teacher (a prime far above any seed a sweep uses).
TAUGHT_SEED_OFFSET = 1_000_003


def initial_weights_seed(seed: int, uses_teacher: bool) -> int:
    """The seed a run's initial weights are drawn from. A stage fed by a teacher draws its own: a student
    trained at the same run.seed as its teacher never starts at the teacher's initialisation, which for the
    control (a student of a random encoder, the step-0 export of a run at that seed) would be the teacher
    itself, and for any teacher a shared starting point."""
    return seed + TAUGHT_SEED_OFFSET if uses_teacher else seed


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor] | torch.Tensor, device: torch.device) -> None:
    """Restores what rng_state() returned (a bare tensor: a checkpoint that kept the CPU state only)."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
