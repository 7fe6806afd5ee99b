"""Where a process computes, decided in one place for the trainer, the target-cache job, the probe and the
loaders, so that DeepSpeed (which reads `DS_ACCELERATOR`), torch and DALI never disagree.

The accelerator is `DS_ACCELERATOR` when it is set, else CUDA when torch sees a GPU, else the CPU. A
process that picks it also writes it into `DS_ACCELERATOR` before DeepSpeed first asks, so DeepSpeed's
accelerator is the same one. The device of local rank r is `cuda:(r % device_count)`: the launcher
(`deepspeed`, torchrun) shows every GPU of a node to every rank, while a scheduler that gives each task
one GPU (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per task) shows each rank one, which is
then `cuda:0` whatever its local rank.
"""

from __future__ import annotations

import os
import sys

import torch

ACCELERATORS = ("cuda", "cpu")


class DeviceError(RuntimeError):
    """An accelerator that cannot be used here (a typo in DS_ACCELERATOR, CUDA asked for without a GPU)."""


def accelerator_name() -> str:
    """`DS_ACCELERATOR` if set (cuda or cpu), else cuda when torch sees a GPU, else cpu."""
    name = os.environ.get("DS_ACCELERATOR", "").strip().lower()
    if name:
        if name not in ACCELERATORS:
            raise DeviceError(f"DS_ACCELERATOR={name!r}: this program trains on {' or '.join(ACCELERATORS)}")
        if name == "cuda" and not torch.cuda.is_available():
            raise DeviceError("DS_ACCELERATOR=cuda but torch sees no CUDA device (check CUDA_VISIBLE_DEVICES and "
                              "the driver), or unset it to train on the CPU")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def pin_accelerator(announce: bool = False) -> str:
    """Chooses the accelerator and writes it into DS_ACCELERATOR, so DeepSpeed's is the same. With
    `announce`, says so when the CPU is chosen although GPUs are visible (an explicit DS_ACCELERATOR=cpu)."""
    name = accelerator_name()
    os.environ["DS_ACCELERATOR"] = name
    if announce and name == "cpu" and torch.cuda.is_available():
        print("note: DS_ACCELERATOR=cpu: training on the CPU although CUDA devices are visible", file=sys.stderr,
              flush=True)
    return name


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def training_device(accelerator: str | None = None, rank_on_node: int | None = None) -> torch.device:
    """cuda:(local rank % visible GPUs), or the CPU."""
    accelerator = accelerator or accelerator_name()
    if accelerator == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count < 1:
        raise DeviceError("CUDA was chosen but no CUDA device is visible")
    r = local_rank() if rank_on_node is None else rank_on_node
    return torch.device("cuda", r % count)


def use_device(device: torch.device) -> torch.device:
    """Makes `device` this process's current CUDA device (allocations without an index, DALI, NCCL)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def process_device() -> torch.device:
    """This process's device, chosen, pinned for DeepSpeed and made current: what a job that is not the
    trainer (the target-cache job, the probe) computes on."""
    return use_device(training_device(pin_accelerator()))


def dali_device(training: torch.device | None) -> tuple[str, int | None]:
    """DALI's device for batches used on `training`: ("gpu", index) on a CUDA device, else ("cpu", None);
    without a training device, the first visible GPU if any."""
    if training is None:
        if not torch.cuda.is_available():
            return "cpu", None
        training = torch.device("cuda", torch.cuda.current_device())
    if training.type == "cuda":
        return "gpu", training.index if training.index is not None else torch.cuda.current_device()
    return "cpu", None
