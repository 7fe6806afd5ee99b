"""Every collective of the package goes through this module (a test reads the sources to keep it so).

Two process groups:
- the default group (NCCL on GPUs, gloo on CPUs): metrics reduced at log steps, on the training device,
  and the barriers around checkpoints and exports. NCCL refuses CPU tensors, so every tensor handed to it
  is checked here against the training device first (`check_placement`): the check runs on every call,
  on the CPU too, so a CPU tensor meant for NCCL fails in the CPU tests, not at a user's first log step.
- the control group (always gloo, CPU tensors, a short timeout `run.peer_timeout_s`): the per-step stop
  flags and the small Python objects gathered at boundaries (skipped samples, loader states, RNG states).
  It never touches the GPU, so the per-step flag exchange costs no host-device synchronisation; and a peer
  that stops answering (dead under NCCL, or hung) fails it within the timeout, with gloo's error, which
  `stopping.collective_failed` recognises, instead of hanging NCCL until its watchdog aborts the process.
  The same two-group layout is Megatron-LM's (its gloo groups for CPU-side exchanges).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


class CollectiveDeviceError(RuntimeError):
    """A tensor handed to a collective lives on the wrong device (a bug, not a lost peer)."""


@dataclass
class _State:
    device: torch.device = torch.device("cpu")
    world: int = 1
    control: object | None = None  # the gloo group of the control plane (world > 1)
    peer_timeout_s: float = 0.0


_state = _State()


def setup(device: torch.device, peer_timeout_s: float) -> None:
    """After the default group is up (every rank calls it): records the training device and makes the
    control group."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    control = None
    if world > 1:
        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=peer_timeout_s))
    _state.device, _state.world, _state.control, _state.peer_timeout_s = device, world, control, peer_timeout_s


def training_device() -> torch.device:
    return _state.device


def world_size() -> int:
    return _state.world


def check_placement(tensor: torch.Tensor, expected: torch.device, what: str) -> None:
    """Raises CollectiveDeviceError unless `tensor` lives on `expected` (a CUDA device without an index
    matches any CUDA tensor)."""
    ok = tensor.device.type == expected.type and (expected.index is None or tensor.device.index == expected.index)
    if not ok:
        raise CollectiveDeviceError(f"{what}: tensor on {tensor.device}, but this group's collectives run on "
                                    f"{expected} (NCCL refuses CPU tensors; gloo's control group takes CPU ones)")


def _active() -> bool:
    return _state.world > 1 and dist.is_initialized()


def barrier() -> None:
    """Every rank waits here (default group, its long timeout: one rank may be writing a checkpoint)."""
    if not _active():
        return
    if _state.device.type == "cuda":
        dist.barrier(device_ids=[_state.device.index])
    else:
        dist.barrier()


def _reduce(values: torch.Tensor, op, what: str) -> torch.Tensor:
    check_placement(values, _state.device, what)
    if not _active():
        return values
    out = values.clone()
    dist.all_reduce(out, op=op)
    return out


def mean(values: torch.Tensor) -> torch.Tensor:
    """values (K,) on the training device → their mean over ranks, on the training device (no host read)."""
    return _reduce(values, dist.ReduceOp.SUM, "mean over ranks") / _state.world


def max_flags(flags: list[int]) -> list[int]:
    """The control plane's per-step exchange: each flag's maximum over ranks (CPU, gloo, short timeout)."""
    if not _active():
        return list(flags)
    t = torch.tensor(flags, dtype=torch.int64)
    check_placement(t, torch.device("cpu"), "control flags")
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_state.control)
    return [int(x) for x in t]


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (pickled, over the control group: no GPU involved)."""
    if not _active():
        return [obj]
    out = [None] * _state.world
    dist.all_gather_object(out, obj, group=_state.control)
    return out
