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


PROBES = (("attentive", "attentive"), ("linear", "linear"), ("knn", "k-NN"), ("knn_std", "k-NN std"))
SSL = ("teacher", "student", "student of supervised", "student of random", "V-JEPA (EMA)")


def versus(probes: dict[str, dict], a: str, b: str) -> tuple[str, str]:
    """(verdict, evidence) of `a` against `b` on every probe both have: holds when `a` is higher on at least
    one probe (intervals apart) and lower on none; does not hold the other way round; else inside noise
    (or mixed, when it is higher on one and lower on another)."""
    results, parts = [], []
    for key, label in PROBES:
        if key in probes[a] and key in probes[b]:
            c = compare(probes[a][key], probes[b][key])
            results.append(c)
            parts.append(f"{label} {_pct(probes[a][key])} vs {_pct(probes[b][key])} ({c})")
    up, down = "higher" in results, "lower" in results
    verdict = "mixed" if up and down else "holds" if up else "does not hold" if down else "inside noise"
    return verdict, "; ".join(parts)


def recovered_lead(probes: dict[str, dict], student: str, teacher: str, floor: str, probe: str = "knn"
                   ) -> tuple[str, str]:
    label = {"knn": "k-NN", "linear": "linear", "attentive": "attentive", "knn_std": "k-NN std"}[probe]
    """Does `student` recover at least half of `teacher`'s lead over `floor`? Holds when the lower end of the
    student's interval is above the half-way mark, does not hold when its upper end is below it; not
    measurable when the teacher's own lead is inside noise (intervals overlapping)."""
    s, t, f = probes[student][probe], probes[teacher][probe], probes[floor][probe]
    lead = t["mean"] - f["mean"]
    half = f["mean"] + 0.5 * lead
    if compare(t, f) != "higher":
        return "not measurable", f"the teacher does not lead the floor on {label} ({_pct(t)} vs {_pct(f)})"
    share = (s["mean"] - f["mean"]) / lead
    verdict = "holds" if s["low"] > half else "does not hold" if s["high"] < half else "inside noise"
    return verdict, (f"{label} {_pct(s)} against the half-way mark {100 * half:.1f} (floor {_pct(f)}, teacher "
                     f"{_pct(t)}): {100 * share:.0f}% of the lead recovered")


def claim_rows(probes: dict[str, dict], r2: float | None,
               knn_history: list[float] | None = None) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for what the demo measures; intervals decide, never a bare difference."""
    rows = []
    for name in SSL:
        rows.append((f"{name} beats random init (the floor)", *versus(probes, name, "random init")))
    rows.append(("the best SSL encoder beats frame differences (no encoder)",
                 *versus(probes, max(SSL, key=lambda n: probes[n]["linear"]["mean"]), "frame differences")))
    rows.append(("supervised (the ceiling) beats every SSL encoder",
                 *versus(probes, "supervised", max(SSL, key=lambda n: probes[n]["attentive"]["mean"]))))
    for probe, label in (("knn", "k-NN"), ("linear", "linear-probe")):
        rows.append((f"student of the supervised encoder recovers at least half of its {label} lead over random",
                     *recovered_lead(probes, "student of supervised", "supervised", "random init", probe)))
    rows.append(("student of a random teacher beats that teacher (random frozen teachers)",
                 *versus(probes, "student of random", "random init")))
    rows.append(("student > teacher (the paper's first claim, pixel teacher)", *versus(probes, "student", "teacher")))
    rows.append(("SALT student >= V-JEPA at matched FLOPs", *versus(probes, "student", "V-JEPA (EMA)")))
    rows.append(("student robust to a smaller teacher", "not measured here",
                 "needs teachers of two sizes: `python benchmarks/claims.py`"))
    lo, hi = probes["random init"]["chance_band"]
    at_chance = bool(knn_history) and all(acc <= hi for acc in knn_history)  # none rises above guessing
    if r2 is None:
        rows.append(("student loss predicts probe accuracy", "too few checkpoints", "–"))
    else:
        rows.append(("student loss predicts probe accuracy", "inside noise" if at_chance else "measured",
                     f"R² = {r2:.2f} over the checkpoints of the student of the supervised encoder (k-NN)"
                     + (f"; no checkpoint's k-NN rises above the guessing band [{100 * lo:.1f}, {100 * hi:.1f}], "
                        "so the fit is to noise" if at_chance else "")))
    return rows


def write_report(out: Path, *, size: str, size_cfg: dict, runs: dict[str, dict], probes: dict[str, dict],
                 loader: dict[str, float], run_dirs: dict[str, Path], elapsed_s: float) -> Path:
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
    student_rows = read_metrics(run_dirs["student of supervised"])
    points = [(r["step"], r["loss"], r["knn_top1"]) for r in student_rows if r.get("knn_top1") is not None]
    r2 = r_squared([p[1] for p in points], [p[2] for p in points])
    verdict = claim_rows(probes, r2, [p[2] for p in points])
    lines += [f"| {c} | {v} | {e} |" for c, v, e in verdict]
    lines += ["", "## Frozen probes: floor, ceiling and every SSL encoder", "",
              "| encoder | training FLOPs (this run) | FLOPs to produce it | final training loss | attentive top-1 | "
              "linear top-1 | k-NN top-1 | k-NN top-1, standardised | attentive / linear train top-1 |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    teachers = {"student": runs["teacher"]["train_flops"], "student of supervised": runs["supervised"]["train_flops"],
                "student of random": 0.0}
    for name, probe in probes.items():
        run = runs.get(name)
        own = run["train_flops"] if run else 0.0
        total = own + teachers.get(name, 0.0)
        loss = f"{run['final_loss']:.4f}" if run else "–"
        att = _pct(probe["attentive"]) if "attentive" in probe else "–"
        att_fit = f"{100 * probe['train_top1']:.0f}%" if "train_top1" in probe else "–"
        lines.append(f"| {name} | {fmt_flops(own)} | {fmt_flops(total)} | {loss} | {att} | "
                     f"{_pct(probe['linear'])} | {_pct(probe['knn'])} | {_pct(probe['knn_std'])} | "
                     f"{att_fit} / {100 * probe['linear_train_top1']:.0f}% |")
    lines += ["", "Random init is the teacher's own initialisation (its step-0 export), the teacher of the control "
              "student (every student draws initial weights of its own, never its teacher's); pixels and frame differences are no encoder at all (each frame pooled to 8 x 8, "
              "flattened). Students count their teacher's FLOPs in \"FLOPs to produce it\"; the V-JEPA baseline "
              "was given the pixel teacher + its student's budget. Attentive probe: learned-query cross-attention "
              "on the frozen encoder's tokens, epochs and weight decay chosen on a held-out fifth of the training "
              f"videos, then {size_cfg['probe_seeds']} seeds on all of them; validation logits averaged over evenly "
              "spaced clips. Linear: MAE's protocol, a BatchNorm without affine then a linear layer on mean-pooled "
              "features (same seeds). k-NN: cosine, k = 20, on mean-pooled features, no training; standardised: "
              "each dimension z-scored over the training views first. Flipped training views of left/right "
              "classes are relabelled (the dataset's `hflip_labels`).", ""]

    plot_losses(run_dirs, out / "loss_curves.png")
    plot_health(run_dirs, out / "health.png")
    lines += ["## Loss curves", "", "![training loss per stage](loss_curves.png)", "",
              "## Health during training", "",
              "Feature standard deviation and effective rank (RankMe) of the trained encoder's features on each "
              "logged batch; the k-NN probe on the held-out clips at every checkpoint and early step "
              "(`run.probe_every`, `run.export_steps`: the learning curve), and the mean cosine similarity between "
              "two tokens of one clip there (1: every token alike, the position detail gone):", "",
              "| run | RankMe first → last | feature std first → last | token cosine, first → last probe | "
              "k-NN at steps (step: %) |",
              "| --- | ---: | ---: | ---: | --- |"]
    for name, d in run_dirs.items():
        rows = [r for r in read_metrics(d) if r.get("rankme") is not None]
        probed = [r for r in read_metrics(d) if r.get("knn_top1") is not None]
        knn = [f"{r['step']}: {100 * r['knn_top1']:.0f}" for r in probed]
        cos = [r["diag_token_cosine"] for r in probed if r.get("diag_token_cosine") is not None]
        if rows:
            lines.append(f"| {name} | {rows[0]['rankme']:.1f} → {rows[-1]['rankme']:.1f} | "
                         f"{rows[0]['feature_std']:.3f} → {rows[-1]['feature_std']:.3f} | "
                         f"{f'{cos[0]:.2f} → {cos[-1]:.2f}' if cos else '–'} | {', '.join(knn)} |")
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
