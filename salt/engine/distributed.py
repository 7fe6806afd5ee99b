"""Process-group set-up that works the same under the deepspeed launcher, torchrun, srun and plain python.

Backend and device come from one place (salt.devices): the accelerator DeepSpeed uses is the one salt
chose, NCCL on CUDA devices and gloo on the CPU, and rank r computes on cuda:(local rank % visible GPUs).
The collectives themselves live in salt.engine.collectives.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch

from salt.devices import DeviceError, pin_accelerator, training_device, use_device
from salt.engine import collectives

# NCCL without a short blocking wait on every collective (TORCH_NCCL_BLOCKING_WAIT would make each wait a
# host synchronisation): a failed or timed-out collective aborts the communicators (2: clean up, do not
# crash), so a later collective raises in Python instead of the watchdog killing the process with a C++
# trace; a peer that stops answering is found within run.peer_timeout_s by the control group's exchange.
NCCL_DEFAULTS = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2", "TORCH_NCCL_DUMP_ON_TIMEOUT": "0"}
DEFAULT_GROUP_TIMEOUT = timedelta(minutes=30)  # checkpoints and the main rank's exports wait inside it


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _join(backend: str) -> None:
    """Joins the launcher's process group (or a group of one) through DeepSpeed."""
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, verbose=False, timeout=DEFAULT_GROUP_TIMEOUT)


def _deepspeed_device_type() -> str:
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def init_distributed(peer_timeout_s: float = 120.0, announce: bool = True) -> DistInfo:
    """Chooses the accelerator (and tells DeepSpeed), makes this rank's device current, joins the process
    group (gloo on the CPU, NCCL on GPUs) and the control group; a plain `python` run becomes a group of one."""
    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT", str(_free_port()))})
    accelerator = pin_accelerator(announce=announce and os.environ.get("RANK") == "0")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = use_device(training_device(accelerator, local_rank))
    backend = backend_for(device)
    if backend == "nccl":
        for key, value in NCCL_DEFAULTS.items():
            os.environ.setdefault(key, value)
    _join(backend)
    seen = _deepspeed_device_type()
    if seen != device.type:
        raise DeviceError(f"DeepSpeed's accelerator is {seen} but salt chose {device.type}: DeepSpeed was set up "
                          "before salt.engine.distributed (set DS_ACCELERATOR to one of them)")
    collectives.setup(device, peer_timeout_s)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return DistInfo(rank, world, local_rank, device, backend)


def local_world_size(world: int) -> int:
    """Processes on this machine: torchrun's LOCAL_WORLD_SIZE, the deepspeed launcher's LOCAL_SIZE, Slurm's
    SLURM_NTASKS_PER_NODE, else `world` (one machine)."""
    for key in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return world


def set_threads(threads: int | None, local_world: int) -> int:
    """Torch intra-op threads: the cores shared among the processes on this machine (oversubscribed
    OpenMP threads make small ops orders of magnitude slower on a 2-core machine)."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(n)
    return n
