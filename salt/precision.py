"""Precision names in one place, and the compute precision chosen for the device a run is on.

The run config, the target cache and the job say fp32/bf16/fp16; a DeepSpeed JSON says
float32/bfloat16/float16.

`run.precision: auto` (the default) computes in bf16 where bf16 is native (CUDA GPUs of compute
capability 8.0 and newer; CPUs with AVX512-BF16 or AMX, or Arm's BF16 extension) and in fp32 elsewhere:
on a CPU that has only AVX2, torch emulates bf16, and a 512^3 matmul ran at 0.69 GFLOP/s against
36.7 in fp32 (two timm blocks forward+backward: 4.74 s against 0.44 s). `auto` never asks for more
than the DeepSpeed config does: a JSON without autocast (ds_configs/zero1_fp32.json) stays fp32. An
explicit `bf16`, `fp16` or `fp32` is used as given.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEEPSPEED_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def torch_dtype(name: str) -> torch.dtype:
    """fp32 | bf16 | fp16 (or DeepSpeed's float32 | bfloat16 | float16) -> the torch dtype."""
    short = DEEPSPEED_NAMES.get(name, name)
    if short not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[short]


def short_name(dtype: torch.dtype | None) -> str | None:
    """torch.bfloat16 -> "bf16"; None stays None."""
    if dtype is None:
        return None
    return next(k for k, v in DTYPES.items() if v == dtype)


@dataclass(frozen=True)
class CpuFeatures:
    capability: str  # torch.backends.cpu.get_cpu_capability(): the ISA torch's own kernels run at
    native_bf16: bool  # bf16 matrix instructions that torch's kernels use (not emulated)


def _arm_has_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("Features") and " bf16" in f" {line.split(':', 1)[-1]}" for line in text.splitlines())


def cpu_features() -> CpuFeatures:
    """This CPU as torch uses it. bf16 is native when the CPU has AVX512-BF16 or AMX and torch's kernels
    run at AVX-512 (ATEN_CPU_CAPABILITY=avx2 makes them AVX2, emulating bf16), or on Arm with BF16."""
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return CpuFeatures(capability, _arm_has_bf16())
    cpu = getattr(torch, "cpu", None)
    hw = any(bool(getattr(cpu, f, lambda: False)()) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return CpuFeatures(capability, hw and capability.upper().startswith("AVX512"))


@dataclass(frozen=True)
class Precision:
    """The compute precision of a run and why it was chosen."""

    name: str  # bf16 | fp16 | fp32
    reason: str

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32 (no autocast)."""
        return None if self.name == "fp32" else DTYPES[self.name]

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_precision(requested: str, device: torch.device, asked: torch.dtype | None,
                      cpu: CpuFeatures | None = None) -> Precision:
    """requested: run.precision; asked: what the DeepSpeed config's autocast asks for (None: fp32)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        note = ""
        if requested == "bf16" and device.type == "cpu" and not (cpu or cpu_features()).native_bf16:
            note = f"; this CPU ({(cpu or cpu_features()).capability}) emulates bf16, about 10x slower than fp32"
        return Precision(requested, f"run.precision={requested}{note}")
    if asked is None:
        return Precision("fp32", "auto: the DeepSpeed config asks for no autocast")
    want = short_name(asked)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if want == "bf16" and not torch.cuda.is_bf16_supported():
            return Precision("fp32", f"auto: {name} has no native bf16")
        return Precision(want, f"auto: {name}")
    if device.type == "cpu":
        cpu = cpu or cpu_features()
        if want == "bf16" and cpu.native_bf16:
            return Precision("bf16", f"auto: CPU {cpu.capability} with native bf16")
        if want == "bf16":
            return Precision("fp32", f"auto: CPU {cpu.capability} has no native bf16 (emulated bf16 runs about "
                                     "10x slower than fp32)")
        return Precision("fp32", f"auto: {want} autocast on a CPU")
    return Precision(want, f"auto: {device.type}")


def weights_dtype(setting: str, precision: str) -> torch.dtype:
    """A frozen network's weights (teacher.dtype): bf16 | fp32 as given, or `auto`: bf16 when the run
    computes in bf16 (or its precision is not resolved yet), else fp32."""
    if setting != "auto":
        return torch_dtype(setting)
    return torch.float32 if precision in ("fp32", "fp16") else torch.bfloat16
