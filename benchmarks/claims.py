"""The paper's claims at small scale, on the synthetic dataset, with seeds and spread.

    python benchmarks/claims.py [--seeds 0 1] [--total-steps 240] [--out runs/claims] [--json OUT]

Sweeps (every point for each seed):
  split      teacher steps x student steps with their sum held fixed (default teacher 1/6, 1/3, 2/3)
  size       the middle split with a smaller teacher (2 blocks instead of 6)
  vjepa      the V-JEPA EMA baseline given the FLOPs of the middle split's teacher + student
and probes every encoder (frozen attentive probe). Answers: does the student beat its teacher;
does SALT beat V-JEPA at matched FLOPs; is the student robust to teacher size and training length;
does student loss track probe accuracy (R^2 over all students). Writes claims.md and JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from salt.report import r_squared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--config", "tiny", "--data.batch_size=8", "--run.log_every=10", "--run.tensorboard=false"]


def sh(args: list[str]) -> None:
    print("$ " + " ".join(args), file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


class Sweep:
    def __init__(self, out: Path, train: Path, val: Path, probe_epochs: int):
        self.out, self.train_shards, self.val_shards, self.probe_epochs = out, train, val, probe_epochs

    def train(self, run: Path, stage: str, steps: int, seed: int, *extra: str) -> dict:
        if not (run / "summary.json").exists() or summary(run)["step"] != steps:
            sh(["salt/train.py", *COMMON, "--stage", stage, "--shards", str(self.train_shards), "--run-dir", str(run),
                "--steps", str(steps), f"--run.seed={seed}", f"--data.seed={seed}",
                f"--run.checkpoint_every={steps}", f"--optim.warmup_steps={max(1, steps // 10)}", *extra])
        return summary(run)

    def probe(self, encoder: Path, seed: int) -> float:
        out = encoder / "probe_claims.json"
        if not out.exists():
            sh(["-m", "salt.eval.probe", "--encoder", str(encoder), "--train", str(self.train_shards), "--val",
                str(self.val_shards), "--epochs", str(self.probe_epochs), "--train-views", "1", "--batch-size", "16",
                "--seed", str(seed), "--json", str(out)])
        return json.loads(out.read_text())["top1"]

    def pair(self, teacher_steps: int, student_steps: int, seed: int, teacher_depth: int = 6) -> dict:
        tag = f"t{teacher_steps}_s{student_steps}_d{teacher_depth}_seed{seed}"
        t_run, s_run = self.out / tag / "teacher", self.out / tag / "student"
        t = self.train(t_run, "teacher", teacher_steps, seed, f"--model.depth={teacher_depth}")
        s = self.train(s_run, "student", student_steps, seed, "--teacher", str(t_run))
        return {"teacher_steps": teacher_steps, "student_steps": student_steps, "teacher_depth": teacher_depth,
                "seed": seed, "teacher_top1": self.probe(t_run, seed), "student_top1": self.probe(s_run, seed),
                "student_loss": s["final_loss"], "teacher_flops": t["train_flops"], "student_flops": s["train_flops"]}


def vjepa_steps(budget: float, batch: int) -> int:
    from salt.build import steps_for_budget
    from salt.config import load_config

    return steps_for_budget(load_config("tiny", ["stage=vjepa", f"data.batch_size={batch}"]), budget)


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--total-steps", type=int, default=240, help="teacher + student steps of every split")
    ap.add_argument("--train-videos", type=int, default=300)
    ap.add_argument("--val-videos", type=int, default=100)
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "runs" / "claims"))
    ap.add_argument("--json", default=None, help="default benchmarks/results/claims.json")
    args = ap.parse_args(argv)
    out = Path(args.out)

    train, val = REPO / "shards" / "claims-train", REPO / "shards" / "claims-val"
    for split, n, seed, shards in (("train", args.train_videos, 0, train), ("val", args.val_videos, 1, val)):
        raw = out / "data" / split
        if not (raw / "labels.csv").exists():
            sh(["-m", "dataprep.synth", "--out", str(raw), "--videos", str(n), "--seed", str(seed)])
        if not (shards / "manifest.json").exists():
            sh(["-m", "dataprep.shards", "--input", str(raw), "--out", str(shards), "--short-side", "64", "--quiet"])

    sweep = Sweep(out, train, val, args.probe_epochs)
    total = args.total_steps
    splits = [(total // 6, total - total // 6), (total // 3, total - total // 3), (2 * total // 3, total // 3)]
    pairs = [sweep.pair(t, s, seed) for t, s in splits for seed in args.seeds]
    mid_t, mid_s = splits[1]
    small = [sweep.pair(mid_t, mid_s, seed, teacher_depth=2) for seed in args.seeds]
    vjepa = []
    for seed in args.seeds:
        mid = next(p for p in pairs if (p["teacher_steps"], p["seed"]) == (mid_t, seed))
        budget = mid["teacher_flops"] + mid["student_flops"]
        steps = vjepa_steps(budget, 8)
        run = out / f"vjepa_{steps}_seed{seed}"
        v = sweep.train(run, "vjepa", steps, seed)
        vjepa.append({"seed": seed, "steps": steps, "flops": v["train_flops"], "budget": budget,
                      "top1": sweep.probe(run, seed), "loss": v["final_loss"]})

    students = pairs + small
    r2 = r_squared([p["student_loss"] for p in students], [p["student_top1"] for p in students])
    lines = ["# SALT claims at small scale (synthetic motion dataset, 10 classes, chance 10%)", "",
             f"Seeds {args.seeds}; every split has {total} steps in all; batch 8; `tiny` config (ViT-Tiny width, 6 "
             "blocks, 8 frames x 64 px); frozen attentive probe top-1 (%) as mean ± sd over seeds.", "",
             "| teacher steps | student steps | teacher depth | teacher probe | student probe | student - teacher |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (t, s, d) in [(t, s, 6) for t, s in splits] + [(mid_t, mid_s, 2)]:
        pts = [p for p in students if (p["teacher_steps"], p["student_steps"], p["teacher_depth"]) == (t, s, d)]
        gain = [p["student_top1"] - p["teacher_top1"] for p in pts]
        lines.append(f"| {t} | {s} | {d} | {mean_sd([p['teacher_top1'] for p in pts])} | "
                     f"{mean_sd([p['student_top1'] for p in pts])} | {mean_sd(gain)} |")
    mid_pts = [p for p in pairs if p["teacher_steps"] == mid_t]
    lines += ["", "| method at matched FLOPs | training FLOPs | probe top-1 |", "| --- | ---: | ---: |",
              f"| SALT (teacher {mid_t} + student {mid_s} steps) | "
              f"{statistics.fmean(p['teacher_flops'] + p['student_flops'] for p in mid_pts) / 1e12:.1f} TFLOP | "
              f"{mean_sd([p['student_top1'] for p in mid_pts])} |",
              f"| V-JEPA EMA ({vjepa[0]['steps']} steps) | {statistics.fmean(v['flops'] for v in vjepa) / 1e12:.1f} TFLOP | "
              f"{mean_sd([v['top1'] for v in vjepa])} |", "",
              f"Student final training loss vs probe top-1 over all {len(students)} students: R² = "
              + (f"{r2:.2f}" if r2 is not None else "n/a"), ""]
    text = "\n".join(lines)
    print(text)
    (out / "claims.md").write_text(text + "\n")
    path = write_result(args.json, "claims", vars(args), students,
                        {"vjepa": vjepa, "loss_vs_probe_r2": r2, "markdown": text})
    print(f"wrote {path} and {out / 'claims.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
