"""A rank's random-number state, as a checkpoint keeps it: the CPU generator, and on a GPU the CUDA
generator of the rank's device (drop-path and dropout draw there), so a resumed run draws what the
uninterrupted one would have drawn."""

from __future__ import annotations

import torch


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
