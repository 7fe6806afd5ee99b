"""Training metrics: per-window step timing (data wait vs compute), throughput, model FLOP/s and MFU,
written to metrics.jsonl (and TensorBoard when installed) and shown as one console line per window.

A resumed run first drops the rows past its checkpoint's step (they were written after that checkpoint,
by the run that stopped), so each step appears once in metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.atomic import reporting_write_errors, write_text_atomic

# dense bf16 tensor-core peaks (TFLOP/s) of common training GPUs, by a substring of the device name
GPU_PEAK_BF16 = {"H200": 989.4, "H100": 989.4, "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
                 "A10G": 125.0}


def peak_tflops(device: torch.device, dtype: torch.dtype | None, configured: float | None) -> tuple[float, str]:
    """Per-device peak for MFU, and where the figure comes from."""
    if configured:
        return configured, "configured"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_BF16.items():
            if key in name:
                return (value if dtype in (torch.bfloat16, torch.float16) else value / 2), f"spec sheet ({name})"
    return measure_matmul_tflops(device, dtype or torch.float32), "measured matmul peak"


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """Best of a few large matmuls in the training dtype: what this device actually sustains."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(repeats + 1):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


@dataclass
class Window:
    """Sums over the steps since the last log line."""

    steps: int = 0
    clips: int = 0
    data_s: float = 0.0
    total_s: float = 0.0
    flops: float = 0.0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def add(self, *, clips: int, data_s: float, total_s: float, flops: float, loss: float,
            grad_norm: float | None, extra: dict[str, float]) -> None:
        self.steps += 1
        self.clips += clips
        self.data_s += data_s
        self.total_s += total_s
        self.flops += flops
        self.losses.append(loss)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.grad_norms.append(grad_norm)
        for k, v in extra.items():
            self.extra.setdefault(k, []).append(v)


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

    def record(self, step: int, epoch: int, window: Window, lr: float, wd: float, loss: float,
               device: torch.device, extra: dict[str, float]) -> dict:
        """One line for the window ending at `step` (1-based count of finished steps)."""
        step_s = window.total_s / max(1, window.steps)
        row = {
            "step": step, "epoch": epoch, "stage": self.stage, "loss": loss, "lr": lr, "weight_decay": wd,
            "grad_norm": sum(window.grad_norms) / len(window.grad_norms) if window.grad_norms else None,
            "clips_per_s": window.clips / window.total_s if window.total_s else None,  # per process / GPU
            "step_time_s": step_s,
            "data_time_s": window.data_s / max(1, window.steps),
            "compute_time_s": (window.total_s - window.data_s) / max(1, window.steps),
            "data_wait_frac": window.data_s / window.total_s if window.total_s else None,
            "tflops": window.flops / window.total_s / 1e12 if window.total_s else None,  # per process / GPU
            "peak_tflops": self.peak,
            "memory_mb": memory_mb(device),
            "world": self.world,
            "time": time.time(),
            **extra,
        }
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
