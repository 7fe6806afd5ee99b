"""The demo's report: runs/<name>/report.md with probe, compute, loss and throughput tables, and PNG plots."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fmt_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return "0" if flops == 0 else f"{flops:.3g} FLOP"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def r_squared(x: list[float], y: list[float]) -> float | None:
    """R^2 of the least-squares line through (x, y)."""
    if len(x) < 3 or len(set(x)) < 2:
        return None
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    syy = sum((b - my) ** 2 for b in y)
    return (sxy * sxy) / (sxx * syy) if sxx > 0 and syy > 0 else None


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows[1:] if r.get(key) is not None] or [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def plot_losses(run_dirs: dict[str, Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, d in run_dirs.items():
        rows = read_metrics(d)
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
    ax.set_title("Training loss per stage (teacher: pixel MSE; others: L1 on latents)", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_at(rows: list[dict], step: int) -> float | None:
    """Mean logged loss over the window ending nearest to `step`."""
    if not rows:
        return None
    return min(rows, key=lambda r: abs(r["step"] - step))["loss"]


def plot_loss_vs_probe(points: list[tuple[int, float, float]], r2: float | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([p[1] for p in points], [100 * p[2] for p in points], c=[p[0] for p in points], cmap="viridis")
    for step, loss, acc in points:
        ax.annotate(f"step {step}", (loss, 100 * acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    title = "Student training loss vs frozen-probe accuracy"
    ax.set_title(title + (f" (R² = {r2:.2f})" if r2 is not None else ""), fontsize=10)
    ax.set_xlabel("student training loss (L1 on teacher latents)")
    ax.set_ylabel("attentive-probe top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, *, size: str, size_cfg: dict, runs: dict[str, dict], probes: dict[str, dict],
                 student_history: dict[int, dict], loader: dict[str, float], run_dirs: dict[str, Path]) -> Path:
    teacher_flops = runs["teacher"]["train_flops"]
    lines = [f"# SALT demo report ({size})", "",
             f"Synthetic motion dataset ({size_cfg['train_videos']} train / {size_cfg['val_videos']} val videos, "
             f"{probes['teacher']['num_classes']} classes, chance {100 / probes['teacher']['num_classes']:.0f}%), "
             f"`salt/configs/tiny.yaml` models, batch {size_cfg['batch_size']}. "
             f"Machine: {platform.node()}, {platform.processor() or platform.machine()}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "## Frozen attentive probe", "",
             "| encoder | training FLOPs (this run) | FLOPs to produce it | final training loss | probe top-1 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, probe in probes.items():
        run = runs.get(name)
        own = run["train_flops"] if run else 0.0
        total = own + (teacher_flops if name.startswith("student") else 0.0)
        loss = f"{run['final_loss']:.4f}" if run else "–"
        lines.append(f"| {name} | {fmt_flops(own)} | {fmt_flops(total)} | {loss} | "
                     f"{100 * probe['top1']:.1f}% |")
    lines += ["", "Students count their teacher's FLOPs in \"FLOPs to produce it\"; the V-JEPA baseline was given "
              "the teacher + online-student budget. Probe: learned-query cross-attention on the frozen encoder's "
              "tokens; validation logits averaged over evenly spaced clips x crops.", ""]

    plot_losses(run_dirs, out / "loss_curves.png")
    lines += ["## Loss curves", "", "![training loss per stage](loss_curves.png)", ""]

    student_rows = read_metrics(run_dirs["student"])
    points = [(step, loss_at(student_rows, step), p["top1"]) for step, p in sorted(student_history.items())]
    points = [p for p in points if p[1] is not None]
    r2 = r_squared([p[1] for p in points], [p[2] for p in points])
    plot_loss_vs_probe(points, r2, out / "student_loss_vs_probe.png")
    lines += ["## Student loss vs probe accuracy", "",
              "| checkpoint step | student training loss | probe top-1 |", "| ---: | ---: | ---: |"]
    lines += [f"| {s} | {loss:.4f} | {100 * acc:.1f}% |" for s, loss, acc in points]
    lines += ["", f"R² of a linear fit: {r2:.2f}" if r2 is not None else "R²: too few checkpoints", "",
              "![student loss vs probe](student_loss_vs_probe.png)", ""]

    lines += ["## Throughput", "", "Training, per process (2-core CPU, one process), medians over the logged windows:",
              "", "| run | clips/s | data-wait fraction | model TFLOP/s | MFU | peak used for MFU |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, d in run_dirs.items():
        rows = read_metrics(d)
        if not rows:
            continue
        lines.append(f"| {name} | {_median(rows, 'clips_per_s'):.1f} | {_median(rows, 'data_wait_frac'):.2f} | "
                     f"{_median(rows, 'tflops'):.3f} | {100 * _median(rows, 'mfu'):.1f}% | "
                     f"{rows[-1]['peak_tflops']:.3g} TFLOP/s |")
    lines += ["", "Loader alone on the training shards (clips/s, batch "
              f"{size_cfg['batch_size']}): " + ", ".join(f"{k} {v:.1f}" for k, v in loader.items()), ""]
    lines += ["## Reproduce", "", "```", f"make demo SIZE={size}", "```", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"size": size, "runs": runs, "probes": probes,
                                                 "student_history": student_history, "loader": loader,
                                                 "loss_vs_probe_r2": r2}, indent=2, default=str))
    return report
