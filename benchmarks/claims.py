"""The paper's claims on the calibrated synthetic setting, over training seeds, with intervals.

    python benchmarks/claims.py [--seeds 0 1 2] [--total-steps 600] [--out runs/claims] [--json OUT]

For every seed (the seed of the weights, the data order and the views of every run):
  split      teacher steps x student steps with their sum held fixed (--teacher-fractions of it)
  size       the 1/3 split with a smaller teacher (2 blocks instead of 6)
  vjepa      the V-JEPA EMA baseline given the FLOPs of the 1/3 split's teacher + student
  supervised the ceiling: the same encoder and attentive head trained on the labels
  random     the floor: the same architecture, untrained
Each encoder is probed (attentive probe with held-out selection, and k-NN) on the demo's task and
clip geometry (`directions4`, 8 x 32 x 32 clips). Figures are means over seeds with a 95% t-interval
over seeds; a claim holds only when the intervals do not overlap. Writes claims.md, the JSON and a
plot of probe accuracy against total training FLOPs per method (the paper's Pareto view).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import interval, write_result  # noqa: E402
from salt.demo import CLIP, SIZES  # noqa: E402
from salt.eval.intervals import chance_band  # noqa: E402
from salt.masks import MASK_KINDS  # noqa: E402
from salt.report import r_squared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BATCH = 32
COMMON = ["--config", "tiny", f"--data.batch_size={BATCH}", "--run.log_every=20", "--run.tensorboard=false", *CLIP]
SUPERVISED_ARGS = SIZES["small"].supervised_args  # the ceiling's recipe, the demo's


def sh(args: list[str]) -> None:
    print("$ " + " ".join(args), file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def fmt(e: dict) -> str:
    return f"{100 * e['mean']:.1f} [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


class Sweep:
    def __init__(self, out: Path, train: Path, val: Path, probe_max_epochs: int):
        self.out, self.train_shards, self.val_shards, self.probe_max_epochs = out, train, val, probe_max_epochs

    def train(self, run: Path, stage: str, steps: int, seed: int, *extra: str) -> dict:
        if not (run / "summary.json").exists() or summary(run)["step"] != steps:
            resume = ["--resume"] if (run / "checkpoints" / "latest").exists() else []  # an interrupted sweep
            sh(["salt/train.py", *resume, *COMMON, "--stage", stage, "--shards", str(self.train_shards), "--run-dir", str(run),
                "--steps", str(steps), f"--run.seed={seed}", f"--data.seed={seed}",
                f"--run.checkpoint_every={steps}", f"--optim.warmup_steps={max(1, steps // 10)}", *extra])
        return summary(run)

    def probe(self, encoder: Path, seed: int, random_init: bool = False) -> dict:
        out = encoder / ("probe_claims_random.json" if random_init else "probe_claims.json")
        if encoder.name == "step_00000000":  # an initialisation: its own export (the tag keeps it apart)
            out = encoder / "probe_claims_init.json"
        if not out.exists():
            sh(["-m", "salt.eval.probe", "--encoder", str(encoder), "--train", str(self.train_shards), "--val",
                str(self.val_shards), "--max-epochs", str(self.probe_max_epochs), "--eval-every",
                str(max(1, self.probe_max_epochs // 10)), "--seeds", "1", "--eval-clips", "2", "--eval-crops", "1",
                "--batch-size", str(BATCH), "--seed", str(seed), "--json", str(out),
                *(["--random-init"] if random_init else [])])
        result = json.loads(out.read_text())
        return {k: result[k]["mean"] for k in ("attentive", "linear", "knn", "knn_std") if k in result}

    def pair(self, teacher_steps: int, student_steps: int, seed: int, teacher_depth: int = 6) -> dict:
        tag = f"t{teacher_steps}_s{student_steps}_d{teacher_depth}_seed{seed}"
        t_run, s_run = self.out / tag / "teacher", self.out / tag / "student"
        t = self.train(t_run, "teacher", teacher_steps, seed, f"--model.depth={teacher_depth}")
        s = self.train(s_run, "student", student_steps, seed, "--teacher", str(t_run))
        return {"teacher_steps": teacher_steps, "student_steps": student_steps, "teacher_depth": teacher_depth,
                "seed": seed, "teacher": self.probe(t_run, seed), "student": self.probe(s_run, seed),
                "student_loss": s["final_loss"], "teacher_flops": t["train_flops"], "student_flops": s["train_flops"]}


    def distill(self, teacher: Path, steps: int, seed: int, tag: str, recipe: tuple[str, ...] = ()) -> dict:
        """A student of the frozen `teacher` (any encoder: the supervised one, a random one), probed, with its
        loss and k-NN at every checkpoint (the loss-vs-probe fit). `recipe`: the student's own overrides."""
        run = self.out / f"{tag}_seed{seed}"
        s = self.train(run, "student", steps, seed, "--teacher", str(teacher), "--run.probe_every=" + str(steps // 4),
                       f"--run.probe_shards={self.val_shards}", "--run.probe_samples=300", *recipe)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["loss"], r["knn_top1"]) for r in rows if r.get("knn_top1") is not None]
        return {"seed": seed, "flops": s["train_flops"], **self.probe(run, seed), "loss": s["final_loss"],
                "curve": curve}


def vjepa_steps(budget: float) -> int:
    from salt.config import load_config
    from salt.stages import steps_for_budget

    overrides = ["stage=vjepa", f"data.batch_size={BATCH}"] + [a[2:] for a in CLIP]
    return steps_for_budget(load_config("tiny", overrides), budget)


PARTS = ("pairs", "distill")


def student_recipe(args) -> tuple[tuple[str, ...], str]:
    """The distill part's student: (its overrides, its folder tag). Masks and rate per 256 clips (linear rule)
    when given; the tag names steps and both, so a finished run of another recipe is never taken for this one."""
    overrides, tag = (), f"s{args.student_steps}"
    if args.student_masks:
        overrides, tag = overrides + (f"--masks.kind={args.student_masks}",), f"{tag}_{args.student_masks}"
    if args.student_lr is not None:
        overrides, tag = overrides + (f"--optim.lr={args.student_lr}",), f"{tag}_lr{args.student_lr:g}"
    return overrides, tag


def distill_section(sweep: Sweep, args, supervised_of) -> tuple[list[str], dict]:
    """The student machinery alone: per seed, a student of that seed's supervised encoder (which never sees
    a label) and a student of that seed's random encoder (the control), beside both teachers."""
    rows = []
    recipe, tag = student_recipe(args)
    for seed in args.seeds:
        sup_run, sup = supervised_of(seed)
        init = sup_run / "export" / "step_00000000"
        rows.append({"seed": seed, "supervised": {"flops": sup["train_flops"], **sweep.probe(sup_run, seed)},
                     "random": sweep.probe(init, seed),
                     "student of supervised": sweep.distill(sup_run, args.student_steps, seed,
                                                            f"distill_supervised_{tag}", recipe),
                     "student of random": sweep.distill(init, args.student_steps, seed, f"distill_random_{tag}",
                                                        recipe)})
    names = ("random", "supervised", "student of supervised", "student of random")
    probes = ("attentive", "linear", "knn", "knn_std")
    est = {n: {k: interval([r[n][k] for r in rows]) for k in probes} for n in names}
    def recovered(probe: str) -> tuple[str, dict | None]:
        """The share of the supervised encoder's lead over random that its student recovers, over seeds; not
        measurable unless that lead holds over seeds (intervals apart)."""
        if verdict(est["supervised"][probe], est["random"][probe]) != "holds":
            return f"not measurable (the supervised encoder does not lead random on {probe} over seeds)", None
        shares = [(r["student of supervised"][probe] - r["random"][probe]) / (r["supervised"][probe] - r["random"][probe])
                  for r in rows]
        share = interval(shares)
        return ("holds" if share["low"] >= 0.5 else "does not hold" if share["high"] < 0.5 else "inside noise"), share

    curve = [(loss, knn) for r in rows for _, loss, knn in r["student of supervised"]["curve"]]
    r2 = r_squared([c[0] for c in curve], [c[1] for c in curve])
    shares = {probe: recovered(probe) for probe in ("knn", "linear")}
    lines = ["## The student machinery on a known-good teacher", "",
             f"Per seed: the supervised encoder ({args.supervised_steps} steps, the ceiling) frozen as the teacher of "
             f"a student ({args.student_steps} steps, {args.student_masks or 'multiblock'} masks, "
             + (f"peak rate {args.student_lr:g} per 256 clips" if args.student_lr is not None else "the config's rate")
             + "; the student never sees a label), and the same student of that "
             "seed's random encoder (the supervised run's step-0 export), the control.", "",
             "| encoder | attentive | linear | k-NN | k-NN, standardised |", "| --- | ---: | ---: | ---: | ---: |"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(fmt(est[n][k]) for k in probes) + " |")
    lines += ["", "| claim | verdict over seeds |", "| --- | --- |"]
    for probe, (said, share) in shares.items():
        lines.append(f"| student of the supervised encoder recovers >= half of its {probe} lead over random | {said}"
                     + (f" ({100 * share['mean']:.0f}% [{100 * share['low']:.0f}, {100 * share['high']:.0f}] of the "
                        "lead)" if share else "") + " |")
    lines += [
              f"| student of a random teacher beats it on k-NN | {verdict(est['student of random']['knn'], est['random']['knn'])}"
              f" ({fmt(est['student of random']['knn'])} vs {fmt(est['random']['knn'])}) |",
              "| student of the supervised encoder beats random on every probe | "
              + ", ".join(f"{k}: {verdict(est['student of supervised'][k], est['random'][k])}" for k in probes) + " |",
              f"| its training loss tracks its k-NN over checkpoints | R² = {r2:.2f} over {len(curve)} checkpoints |"
              if r2 is not None else "| its training loss tracks its k-NN | too few checkpoints |", ""]
    return lines, {"rows": rows, "estimates": est, "lead_recovered": {k: v[1] for k, v in shares.items()},
                   "loss_vs_knn_r2": r2, "curve": curve}


def verdict(a: dict, b: dict) -> str:
    return "holds" if a["low"] > b["high"] else ("does not hold" if a["high"] < b["low"] else "inside noise")


def robust_verdict(big: dict, small: dict, band: tuple[float, float]) -> str:
    """Robust: the smaller teacher's student is not worse. Vacuous when neither student beats guessing."""
    if big["mean"] <= band[1] and small["mean"] <= band[1]:
        return "inside noise: both students at chance"
    return "holds (overlapping intervals)" if big["low"] <= small["high"] and small["low"] <= big["high"] else \
        "does not hold"


def plot_pareto(points: dict[str, list[tuple[float, dict]]], band: tuple[float, float], path: Path) -> None:
    """Probe top-1 against total training FLOPs, one marker series per method, error bars = the intervals;
    the shaded band is where a guessing probe lands. The untrained encoder (0 FLOPs) sits at the left edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.axhspan(100 * band[0], 100 * band[1], color="grey", alpha=0.2, label="guessing (95%)")
    for name, pts in points.items():
        pts = sorted(pts, key=lambda p: p[0])
        xs, ys = [max(p[0], 1e9) / 1e12 for p in pts], [100 * p[1]["mean"] for p in pts]
        err = [[100 * (p[1]["mean"] - p[1]["low"]) for p in pts], [100 * (p[1]["high"] - p[1]["mean"]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, linestyle="-" if len(pts) > 1 else "none")
    ax.set_xscale("log")
    ax.set_xlabel("total training FLOPs (TFLOP; students include their teacher's)")
    ax.set_ylabel("attentive-probe top-1 (%)")
    ax.set_title("Probe accuracy vs compute, mean and 95% interval over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--total-steps", type=int, default=600, help="teacher + student steps of every split")
    ap.add_argument("--teacher-fractions", type=float, nargs="+", default=[1 / 3, 2 / 3],
                    help="teacher share of --total-steps per split; the first is the reference split")
    ap.add_argument("--supervised-steps", type=int, default=600)
    ap.add_argument("--train-videos", type=int, default=400)
    ap.add_argument("--val-videos", type=int, default=300)
    ap.add_argument("--probe-max-epochs", type=int, default=60)
    ap.add_argument("--out", default=str(REPO / "runs" / "claims"))
    ap.add_argument("--json", default=None, help="default benchmarks/results/claims.json")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="pairs: the pixel teacher/student splits, the smaller teacher, V-JEPA; distill: students of "
                         "the supervised encoder and of a random one (default both)")
    ap.add_argument("--student-steps", type=int, default=300, help="steps of the distill part's students")
    ap.add_argument("--student-masks", choices=MASK_KINDS, default=None,
                    help="the distill part's students' masks (default the config's, multiblock; full: no masking)")
    ap.add_argument("--student-lr", type=float, default=None,
                    help="the distill part's students' peak rate per 256 clips, linear rule (default the config's, "
                         "1.5e-4); README's long students: 4e-3, i.e. 5e-4 at batch 32")
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("an interval over seeds needs at least 2 seeds (3 or more recommended)")
    out = Path(args.out)

    train, val = REPO / "shards" / "claims-train", REPO / "shards" / "claims-val"
    for split, n, seed, shards in (("train", args.train_videos, 0, train), ("val", args.val_videos, 1, val)):
        raw = out / "data" / split
        if not (raw / "labels.csv").exists():
            sh(["-m", "dataprep.synth", "--task", "directions4", "--out", str(raw), "--videos", str(n), "--seed",
                str(seed)])
        if not (shards / "manifest.json").exists():
            sh(["-m", "dataprep.shards", "--input", str(raw), "--out", str(shards), "--short-side", "64", "--quiet"])

    sweep = Sweep(out, train, val, args.probe_max_epochs)

    def supervised_of(seed: int) -> tuple[Path, dict]:
        """The ceiling of one seed; its step-0 export is that seed's random encoder."""
        run = out / f"supervised_{args.supervised_steps}_seed{seed}"
        return run, sweep.train(run, "supervised", args.supervised_steps, seed, "--run.export_steps=[0]",
                                *SUPERVISED_ARGS)

    band = chance_band(4, args.val_videos)  # where a guessing probe lands on the validation clips
    header = ["# SALT claims on the calibrated synthetic setting (`directions4`, 4 classes, chance 25%)", "",
              f"Seeds {args.seeds}; batch {BATCH}; `tiny` config (ViT-Tiny width, 6 blocks) on 8 x 32 x 32 clips; "
              "top-1 (%) as mean [95% t-interval over seeds]; attentive probe (held-out selection), linear probe "
              "(BatchNorm + linear) and k-NN (plain, standardised); a guessing probe lands in "
              f"[{100 * band[0]:.1f}, {100 * band[1]:.1f}] on the {args.val_videos} validation clips.", ""]
    distill_lines, distill = (distill_section(sweep, args, supervised_of) if "distill" in args.parts else ([], {}))
    if "pairs" not in args.parts:
        text = "\n".join(header + distill_lines)
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "claims_distill.md").write_text(text + "\n")
        path = write_result(args.json or RESULTS / "claims_distill.json", "claims_distill", vars(args),
                            distill["rows"], {k: v for k, v in distill.items() if k != "rows"} | {"markdown": text})
        print(f"wrote {path} and {RESULTS / 'claims_distill.md'}")
        return 0
    total = args.total_steps
    splits = [(round(total * f), total - round(total * f)) for f in args.teacher_fractions]
    pairs = [sweep.pair(t, s, seed) for t, s in splits for seed in args.seeds]
    mid_t, mid_s = splits[0]
    small = [sweep.pair(mid_t, mid_s, seed, teacher_depth=2) for seed in args.seeds]
    vjepa, supervised, random = [], [], []
    for seed in args.seeds:
        mid = next(p for p in pairs if (p["teacher_steps"], p["seed"]) == (mid_t, seed))
        budget = mid["teacher_flops"] + mid["student_flops"]
        steps = vjepa_steps(budget)
        run = out / f"vjepa_{steps}_seed{seed}"
        v = sweep.train(run, "vjepa", steps, seed)
        vjepa.append({"seed": seed, "steps": steps, "flops": v["train_flops"], "budget": budget,
                      **sweep.probe(run, seed), "loss": v["final_loss"]})
        supervised_run, sup = supervised_of(seed)
        supervised.append({"seed": seed, "flops": sup["train_flops"], **sweep.probe(supervised_run, seed)})
        random.append({"seed": seed, "flops": 0.0, **sweep.probe(supervised_run / "export" / "step_00000000", seed)})

    def stats(rows: list[dict], key: str, probe: str = "attentive") -> dict:
        return interval([r[key][probe] if isinstance(r[key], dict) else r[key] for r in rows])

    students = pairs + small
    r2 = r_squared([p["student_loss"] for p in students], [p["student"]["attentive"] for p in students])
    lines = [*header, f"Every split has {total} teacher + student steps.", "",
             "| teacher steps | student steps | teacher depth | teacher (attentive) | student (attentive) | "
             "teacher (k-NN) | student (k-NN) | student > teacher |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for (t, s, d) in [(t, s, 6) for t, s in splits] + [(mid_t, mid_s, 2)]:
        pts = [p for p in students if (p["teacher_steps"], p["student_steps"], p["teacher_depth"]) == (t, s, d)]
        ta, sa = interval([p["teacher"]["attentive"] for p in pts]), interval([p["student"]["attentive"] for p in pts])
        tk, sk = interval([p["teacher"]["knn"] for p in pts]), interval([p["student"]["knn"] for p in pts])
        lines.append(f"| {t} | {s} | {d} | {fmt(ta)} | {fmt(sa)} | {fmt(tk)} | {fmt(sk)} | {verdict(sa, ta)} |")
    mid_pts = [p for p in pairs if p["teacher_steps"] == mid_t]
    small_pts = small
    salt_a, vj_a = interval([p["student"]["attentive"] for p in mid_pts]), interval([v["attentive"] for v in vjepa])
    big_s, small_s = salt_a, interval([p["student"]["attentive"] for p in small_pts])
    sup_a, rnd_a = interval([r["attentive"] for r in supervised]), interval([r["attentive"] for r in random])
    sup_k, rnd_k = interval([r["knn"] for r in supervised]), interval([r["knn"] for r in random])
    lines += ["", "| encoder | training FLOPs | attentive top-1 | k-NN top-1 |", "| --- | ---: | ---: | ---: |",
              f"| random init (floor) | 0 | {fmt(rnd_a)} | {fmt(rnd_k)} |",
              f"| SALT student (teacher {mid_t} + student {mid_s} steps) | "
              f"{statistics.fmean(p['teacher_flops'] + p['student_flops'] for p in mid_pts) / 1e12:.2f} TFLOP | "
              f"{fmt(salt_a)} | {fmt(interval([p['student']['knn'] for p in mid_pts]))} |",
              f"| V-JEPA EMA ({vjepa[0]['steps']} steps) | {statistics.fmean(v['flops'] for v in vjepa) / 1e12:.2f} "
              f"TFLOP | {fmt(vj_a)} | {fmt(interval([v['knn'] for v in vjepa]))} |",
              f"| supervised (ceiling, {args.supervised_steps} steps) | "
              f"{statistics.fmean(r['flops'] for r in supervised) / 1e12:.2f} TFLOP | {fmt(sup_a)} | {fmt(sup_k)} |",
              "", "| claim | verdict (attentive probe, intervals over seeds) |", "| --- | --- |",
              f"| SALT student >= V-JEPA at matched FLOPs | {verdict(salt_a, vj_a)} ({fmt(salt_a)} vs {fmt(vj_a)}) |",
              f"| student robust to a smaller teacher (6 vs 2 blocks) | {robust_verdict(big_s, small_s, band)} "
              f"({fmt(big_s)} vs {fmt(small_s)}) |",
              f"| student loss predicts probe accuracy | R² = {r2:.2f} over {len(students)} students |"
              if r2 is not None else "| student loss predicts probe accuracy | n/a |", "",
              "![probe accuracy vs FLOPs](claims_pareto.png)", "", *distill_lines]
    text = "\n".join(lines)
    print(text)
    (out / "claims.md").write_text(text + "\n")
    pareto = {
        "SALT (teacher 6 blocks)": [(p["teacher_flops"] + p["student_flops"], interval(
            [q["student"]["attentive"] for q in pairs if q["teacher_steps"] == p["teacher_steps"]]))
            for p in pairs if p["seed"] == args.seeds[0]],
        "SALT (teacher 2 blocks)": [(statistics.fmean(p["teacher_flops"] + p["student_flops"] for p in small), small_s)],
        "teacher alone": [(p["teacher_flops"], interval([q["teacher"]["attentive"] for q in pairs
                                                         if q["teacher_steps"] == p["teacher_steps"]]))
                          for p in pairs if p["seed"] == args.seeds[0]],
        "V-JEPA EMA": [(statistics.fmean(v["flops"] for v in vjepa), vj_a)],
        "supervised": [(statistics.fmean(r["flops"] for r in supervised), sup_a)],
        "random init (0 FLOPs)": [(1e9, rnd_a)],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_pareto(pareto, band, RESULTS / "claims_pareto.png")
    (RESULTS / "claims.md").write_text(text + "\n")
    path = write_result(args.json, "claims", vars(args), students,
                        {"vjepa": vjepa, "supervised": supervised, "random": random, "loss_vs_probe_r2": r2,
                         "distill": distill, "markdown": text})
    print(f"wrote {path}, {RESULTS / 'claims.md'} and {RESULTS / 'claims_pareto.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
