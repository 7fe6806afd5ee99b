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
    ax.set_title("Training loss per stage (teacher: pixel MSE; supervised: cross-entropy; others: L1 on latents)",
                 fontsize=9)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loss_vs_probe(points: list[tuple[int, float, float]], r2: float | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([p[1] for p in points], [100 * p[2] for p in points], c=[p[0] for p in points], cmap="viridis")
    for step, loss, acc in points:
        ax.annotate(f"step {step}", (loss, 100 * acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    title = "Student training loss vs k-NN probe at its checkpoints"
    ax.set_title(title + (f" (R² = {r2:.2f})" if r2 is not None else ""), fontsize=10)
    ax.set_xlabel("student training loss (L1 on teacher latents)")
    ax.set_ylabel("k-NN top-1 on held-out clips (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_health(run_dirs: dict[str, Path], path: Path) -> None:
    """RankMe and k-NN accuracy over training, per run: collapse and stalls show here."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, d in run_dirs.items():
        rows = read_metrics(d)
        ranked = [r for r in rows if r.get("rankme") is not None]
        probed = [r for r in rows if r.get("knn_top1") is not None]
        if ranked:
            a.plot([r["step"] for r in ranked], [r["rankme"] for r in ranked], label=name)
        if probed:
            b.plot([r["step"] for r in probed], [100 * r["knn_top1"] for r in probed], marker="o", label=name)
    a.set_title("effective rank (RankMe) of the batch's token features", fontsize=10)
    b.set_title("k-NN top-1 on held-out clips at checkpoints", fontsize=10)
    for ax, label in ((a, "RankMe"), (b, "top-1 (%)")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(a: dict, b: dict) -> str:
    """'higher' / 'lower' when the 95% intervals do not overlap, else 'inside noise'."""
    if a["low"] > b["high"]:
        return "higher"
    if a["high"] < b["low"]:
        return "lower"
    return "inside noise"


def _pct(e: dict) -> str:
    return f"{100 * e['mean']:.1f} [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


def claim_rows(probes: dict[str, dict], r2: float | None,
               knn_history: list[float] | None = None) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for what the demo measures; intervals decide, never a bare difference."""
    rows = []

    def versus(claim: str, a: str, b: str, want: str = "higher") -> None:
        att, knn = compare(probes[a]["attentive"], probes[b]["attentive"]), compare(probes[a]["knn"], probes[b]["knn"])
        verdict = "holds" if att == want else ("inside noise" if att == "inside noise" else "does not hold")
        rows.append((claim, verdict, f"attentive {_pct(probes[a]['attentive'])} vs {_pct(probes[b]['attentive'])} "
                     f"({att}); k-NN {_pct(probes[a]['knn'])} vs {_pct(probes[b]['knn'])} ({knn})"))

    for name in ("teacher", "student", "student (cached targets)", "V-JEPA (EMA)"):
        versus(f"{name} beats random init (the floor)", name, "random init")
    versus("supervised (the ceiling) beats every SSL encoder", "supervised",
           max(("teacher", "student", "student (cached targets)", "V-JEPA (EMA)"),
               key=lambda n: probes[n]["attentive"]["mean"]))
    versus("student > teacher (the paper's first claim)", "student", "teacher")
    versus("SALT student >= V-JEPA at matched FLOPs", "student", "V-JEPA (EMA)")
    rows.append(("student robust to a smaller teacher", "not measured here",
                 "needs teachers of two sizes: `python benchmarks/claims.py`"))
    lo, hi = probes["random init"]["chance_band"]
    at_chance = bool(knn_history) and all(acc <= hi for acc in knn_history)  # none rises above guessing
    if r2 is None:
        rows.append(("student loss predicts probe accuracy", "too few checkpoints", "–"))
    else:
        rows.append(("student loss predicts probe accuracy", "inside noise" if at_chance else "measured",
                     f"R² = {r2:.2f} over the student's checkpoints (k-NN)"
                     + (f"; no checkpoint's k-NN rises above the guessing band [{100 * lo:.1f}, {100 * hi:.1f}], "
                        "so the fit is to noise" if at_chance else "")))
    return rows


def write_report(out: Path, *, size: str, size_cfg: dict, runs: dict[str, dict], probes: dict[str, dict],
                 loader: dict[str, float], run_dirs: dict[str, Path], elapsed_s: float) -> Path:
    teacher_flops = runs["teacher"]["train_flops"]
    ref = probes["random init"]
    lo, hi = ref["chance_band"]
    args = ", ".join(a.lstrip("-") for a in size_cfg.get("model_args", ())) or "as in the file"
    lines = [f"# SALT demo report ({size})", "",
             f"Synthetic task `{size_cfg['task']}` ({size_cfg['train_videos']} train / {size_cfg['val_videos']} "
             f"validation videos, {ref['num_classes']} classes, chance {100 * ref['chance']:.0f}%: guessing lands in "
             f"[{100 * lo:.1f}, {100 * hi:.1f}]% on {ref['val_samples']} clips). Models: `salt/configs/{size_cfg.get('config', 'tiny')}.yaml` "
             f"({args}), batch {size_cfg['batch_size']}. Machine: {platform.node()}, "
             f"{platform.processor() or platform.machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"the whole demo took {elapsed_s / 60:.1f} min.", "",
             "Every figure is a mean with its 95% interval (bootstrap over validation clips, seeds kept together). "
             "Two figures differ only when their intervals do not overlap; otherwise the report says *inside "
             "noise*. The intervals cover the probe's seeds and the finite validation set, not the spread "
             "between training runs (`benchmarks/claims.py` repeats the training over seeds).", "",
             "## Verdict", "", "| claim | verdict | evidence (top-1 %, mean [95% interval]) |", "| --- | --- | --- |"]
    student_rows = read_metrics(run_dirs["student"])
    points = [(r["step"], r["loss"], r["knn_top1"]) for r in student_rows if r.get("knn_top1") is not None]
    r2 = r_squared([p[1] for p in points], [p[2] for p in points])
    verdict = claim_rows(probes, r2, [p[2] for p in points])
    lines += [f"| {c} | {v} | {e} |" for c, v, e in verdict]
    lines += ["", "## Frozen probes: floor, ceiling and every SSL encoder", "",
              "| encoder | training FLOPs (this run) | FLOPs to produce it | final training loss | attentive top-1 | "
              "k-NN top-1 | probe train top-1 | probe epochs, weight decay |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, probe in probes.items():
        run = runs.get(name)
        own = run["train_flops"] if run else 0.0
        total = own + (teacher_flops if name.startswith("student") else 0.0)
        loss = f"{run['final_loss']:.4f}" if run else "–"
        lines.append(f"| {name} | {fmt_flops(own)} | {fmt_flops(total)} | {loss} | {_pct(probe['attentive'])} | "
                     f"{_pct(probe['knn'])} | {100 * probe['train_top1']:.1f}% | {probe['epochs']}, "
                     f"{probe['weight_decay']} |")
    lines += ["", "Students count their teacher's FLOPs in \"FLOPs to produce it\"; the V-JEPA baseline was given "
              "the teacher + online-student budget. Attentive probe: learned-query cross-attention on the frozen "
              "encoder's tokens, epochs and weight decay chosen on a held-out fifth of the training videos, then "
              f"{size_cfg['probe_seeds']} seeds on all of them; validation logits averaged over evenly spaced clips. "
              "k-NN: cosine, k = 20, on mean-pooled features, no training. Flipped training views of left/right "
              "classes are relabelled (the dataset's `hflip_labels`).", ""]

    plot_losses(run_dirs, out / "loss_curves.png")
    plot_health(run_dirs, out / "health.png")
    lines += ["## Loss curves", "", "![training loss per stage](loss_curves.png)", "",
              "## Health during training", "",
              "Feature standard deviation and effective rank (RankMe) of the trained encoder's features on each "
              "logged batch, and the k-NN probe on the held-out clips at every checkpoint (`run.probe_every`):", "",
              "| run | RankMe first → last | feature std first → last | k-NN at checkpoints (%) |",
              "| --- | ---: | ---: | --- |"]
    for name, d in run_dirs.items():
        rows = [r for r in read_metrics(d) if r.get("rankme") is not None]
        knn = [f"{100 * r['knn_top1']:.0f}" for r in read_metrics(d) if r.get("knn_top1") is not None]
        if rows:
            lines.append(f"| {name} | {rows[0]['rankme']:.1f} → {rows[-1]['rankme']:.1f} | "
                         f"{rows[0]['feature_std']:.3f} → {rows[-1]['feature_std']:.3f} | {', '.join(knn)} |")
    lines += ["", "![health](health.png)", ""]

    plot_loss_vs_probe(points, r2, out / "student_loss_vs_probe.png")
    lines += ["## Student loss vs probe accuracy", "",
              "| checkpoint step | student training loss | k-NN top-1 |", "| ---: | ---: | ---: |"]
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
    (out / "report.json").write_text(json.dumps({"size": size, "size_cfg": size_cfg, "runs": runs, "probes": probes,
                                                 "verdict": verdict, "student_knn_history": points,
                                                 "loader": loader, "loss_vs_probe_r2": r2, "elapsed_s": elapsed_s},
                                                indent=2, default=str))
    return report
