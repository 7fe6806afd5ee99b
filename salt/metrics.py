"""Training metrics: per-window step timing (data wait vs compute), throughput, model FLOP/s and MFU,
written to metrics.jsonl (and TensorBoard when installed) and shown as one console line per window.

A resumed run first drops the rows past its checkpoint's step (they were written after that checkpoint,
by the run that stopped), so each step appears once in metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.atomic import reporting_write_errors, write_text_atomic

# Dense tensor-core peaks per GPU (TFLOP/s, from NVIDIA's data sheets, without sparsity): bf16 (fp16 is the
# same) and TF32 (what fp32 matmuls run as: salt enables TF32 for fp32 runs on GPUs). Matched in order
# on the device name, the more specific names first ("GH200" before "H200", "H100 PCIe" before "H100").
GPU_PEAKS: tuple[tuple[str, str, float, float], ...] = (
    ("GH200", r"\bGH200\b", 989.5, 494.5),
    ("H200 NVL", r"\bH200 NVL\b", 835.5, 417.5),
    ("H200 SXM", r"\bH200\b", 989.5, 494.5),
    ("H100 NVL", r"\bH100 NVL\b", 835.5, 417.5),
    ("H100 PCIe", r"\bH100 PCIe\b", 756.5, 378.0),
    ("H100 SXM", r"\bH100\b", 989.5, 494.5),
    ("B200", r"\bB200\b", 2250.0, 1100.0),
    ("A100", r"\bA100\b", 312.0, 156.0),
    ("L40S", r"\bL40S\b", 362.0, 183.0),
    ("L4", r"\bL4\b", 121.0, 60.0),
    ("A10", r"\bA10\b", 125.0, 62.5),
)


def gpu_spec_peak(name: str, dtype: torch.dtype | None) -> tuple[float, str] | None:
    """(peak, the table row matched) for a GPU of this device name, or None when it is not in the table."""
    for row, pattern, bf16, tf32 in GPU_PEAKS:
        if re.search(pattern, name):
            return (bf16 if dtype in (torch.bfloat16, torch.float16) else tf32), row
    return None


def peak_tflops(device: torch.device, dtype: torch.dtype | None, configured: float | None) -> tuple[float, str]:
    """Per-device peak for MFU in the run's compute dtype, and where the figure comes from."""
    kind = "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "fp32"
    if configured:
        return configured, "run.peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        spec = gpu_spec_peak(name, dtype)
        if spec is not None:
            return spec[0], f"spec sheet {spec[1]}, dense {'tf32' if kind == 'fp32' else kind}"
        n = 8192  # an unknown GPU: a matmul large enough to reach its tensor cores' rate (1024^3 does not)
        return (measure_matmul_tflops(device, dtype or torch.float32, n=n, repeats=5),
                f"measured {n}^3 {kind} matmul on {name} (not in the spec table: set run.peak_tflops)")
    return measure_matmul_tflops(device, dtype or torch.float32), f"measured 1024^3 {kind} matmul"


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """Best of a few large matmuls in the training dtype, after one warm-up: what this device sustains."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(repeats + 1):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def memory_stats(device: torch.device) -> dict[str, float]:
    """memory_mb: the peak torch allocated since the last call (a GPU; reset here), or this process's
    resident memory (CPU). device_used_mb (GPU): what the whole device holds, DALI's pool, CUDA contexts
    and other processes included. Host-side queries: no stream synchronisation."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        free, total = torch.cuda.mem_get_info(device)
        return {"memory_mb": peak, "device_used_mb": (total - free) / 2**20}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return {"memory_mb": pages * os.sysconf("SC_PAGE_SIZE") / 2**20}
    except (OSError, ValueError):
        return {"memory_mb": float("nan")}


@dataclass
class Window:
    """What the steps since the last log line did. Losses and metrics stay where they were computed (the
    training device) until the log step reads them all at once; times are host wall-clock."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    clips: int = 0
    data_s: float = 0.0
    excluded_s: float = 0.0  # main-rank work inside the window that is not training (the k-NN probe)
    flops: float = 0.0
    losses: list[torch.Tensor] = field(default_factory=list)  # one 0-d tensor per step
    grad_norms: list[torch.Tensor | float] = field(default_factory=list)
    extra: dict[str, list[torch.Tensor | float]] = field(default_factory=dict)

    def add(self, *, clips: int, data_s: float, flops: float, loss: torch.Tensor,
            grad_norm: torch.Tensor | float | None, extra: dict[str, torch.Tensor | float]) -> None:
        self.steps += 1
        self.clips += clips
        self.data_s += data_s
        self.flops += flops
        self.losses.append(loss)
        if grad_norm is not None:
            self.grad_norms.append(grad_norm)
        for k, v in extra.items():
            self.extra.setdefault(k, []).append(v)

    def elapsed_s(self) -> float:
        """Training time of the window so far: call it after its values were read (the device caught up)."""
        return time.perf_counter() - self.start - self.excluded_s


def trim_rows(path: Path, last_step: int) -> int:
    """Keeps the rows of `path` up to `last_step` (and drops a line cut short by a kill), atomically.
    Returns how many rows were dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            step = None
        if isinstance(step, int) and step <= last_step:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(kept))
    return dropped


class MetricsLogger:
    def __init__(self, run_dir: Path, stage: str, total_steps: int, peak: float, peak_source: str, world: int,
                 is_main: bool, tensorboard: bool, resume_step: int | None = None):
        """resume_step: a resumed run's checkpoint step; rows past it are dropped first (main rank)."""
        self.stage, self.total, self.peak, self.peak_source = stage, total_steps, peak, peak_source
        self.world, self.is_main = world, is_main
        self.path = run_dir / "metrics.jsonl"
        if is_main and resume_step is not None:
            trim_rows(self.path, resume_step)
        self._file = None
        if is_main:
            with reporting_write_errors(self.path):
                self._file = open(self.path, "a")
        self._tb = None
        if is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events past the checkpoint (from the run that stopped) are purged when logging resumes
                purge = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self._tb = SummaryWriter(str(run_dir / "tensorboard"), **purge)
            except ImportError:
                pass
        self._start = time.perf_counter()
        self._start_step: int | None = None

    def record(self, step: int, epoch: int, window: Window, wall_s: float, lr: float, wd: float,
               values: dict[str, float | None]) -> dict:
        """One line for the window ending at `step` (1-based count of finished steps). wall_s: the window's
        training time, measured after its values were read back (the device had caught up); values: loss,
        grad_norm, memory and the stage's metrics, already read back and reduced over ranks."""
        step_s = wall_s / max(1, window.steps)
        row = {
            "step": step, "epoch": epoch, "stage": self.stage, "loss": values.pop("loss"), "lr": lr,
            "weight_decay": wd, "grad_norm": values.pop("grad_norm", None),
            "clips_per_s": window.clips / wall_s if wall_s else None,  # per process / GPU
            "step_time_s": step_s,
            "data_time_s": window.data_s / max(1, window.steps),
            "compute_time_s": max(0.0, wall_s - window.data_s) / max(1, window.steps),
            "data_wait_frac": min(1.0, window.data_s / wall_s) if wall_s else None,
            "tflops": window.flops / wall_s / 1e12 if wall_s else None,  # per process / GPU
            "world": self.world,
            "time": time.time(),
            **values,
        }
        if row["tflops"] is not None and self.peak and row["tflops"] > self.peak:
            # a measured peak below what the run itself sustains (the start-up matmul ran slow): the run's
            # own rate is the better lower bound of this device's peak
            if self.is_main:
                print(f"[{self.stage}] note: the run computes at {row['tflops']:.3g} TFLOP/s, above the peak taken "
                      f"at start-up ({self.peak:.3g}, {self.peak_source}); MFU is against the run's own rate from "
                      f"here (set run.peak_tflops for the device's real peak)", file=sys.stderr, flush=True)
            self.peak, self.peak_source = row["tflops"], "raised to the run's own rate"
        row["peak_tflops"] = self.peak
        row["mfu"] = row["tflops"] / self.peak if row["tflops"] is not None and self.peak else None
        if self._file:
            with reporting_write_errors(self.path):
                self._file.write(json.dumps(row) + "\n")
                self._file.flush()
        if self._tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "time") and v is not None:
                    self._tb.add_scalar(f"{self.stage}/{k}", v, step)
        if self.is_main:
            print(self._line(row), file=sys.stderr, flush=True)
        return row

    def _line(self, r: dict) -> str:
        if self._start_step is None:
            self._start_step, self._start = r["step"], time.perf_counter()
            eta = ""
        else:
            rate = (r["step"] - self._start_step) / max(1e-9, time.perf_counter() - self._start)
            left = (self.total - r["step"]) / rate if rate > 0 else 0
            eta = f"  eta {int(left // 60)}m{int(left % 60):02d}s"
        gn = f"  gnorm {r['grad_norm']:.3g}" if r["grad_norm"] is not None else ""
        if "rankme" in r:  # representation health: collapse shows as rank -> 1, std -> 0
            gn += f"  rank {r['rankme']:.1f}  fstd {r['feature_std']:.3f}"
        return (f"[{self.stage}] step {r['step']}/{self.total}  loss {r['loss']:.4f}  lr {r['lr']:.2e}{gn}  "
                f"{r['clips_per_s']:.1f} clips/s  wait {100 * r['data_wait_frac']:.0f}%  "
                f"{r['tflops']:.3f} TFLOP/s  MFU {100 * (r['mfu'] or 0):.1f}%  mem {r['memory_mb'] / 1024:.2f} GB{eta}")

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()
