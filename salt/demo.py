"""`python -m salt.demo` (`make demo`): the whole system on the built-in synthetic dataset, as a
calibrated experiment.

synth videos (the `directions4` task) → shards (train / val) → the supervised ceiling (same encoder and
attentive head trained end to end on the labels) → teacher stage (pixel reconstruction; its step-0 export
is the random floor) → student of the pixel teacher (online) → student of the supervised encoder, from a
teacher-target cache (the student machinery on a teacher known to be good; the student never sees a
label) → the same student of the random teacher (the control, from its own cache) → V-JEPA EMA baseline at the same training FLOPs as
teacher + student → frozen probes on every encoder, the random floor and two encoder-free baselines
(pixels, frame differences): attentive (held-out selection, seeds), linear (BatchNorm + linear, MAE's),
k-NN plain and standardised, each with a 95% interval → runs/demo-SIZE/report.md with the verdict on
each claim.

Every step runs the command a user would type (printed before it runs) and is skipped when its
output is already complete, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from salt.data.loaders import LOADERS
from salt.report import fmt_flops, write_report

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoSize:
    task: str  # dataprep.synth task
    train_videos: int
    val_videos: int
    teacher_steps: int
    student_steps: int
    supervised_steps: int
    batch_size: int
    checkpoints: int  # per run; the student's are k-NN probed for the loss-vs-accuracy curve
    cache_views: int
    probe_max_epochs: int
    probe_seeds: int
    probe_train_views: int
    model_args: tuple[str, ...] = ()  # overrides on top of the config
    config: str = "tiny"  # salt/configs/NAME.yaml
    supervised_args: tuple[str, ...] = ()  # the ceiling's own overrides


# Exports (and k-NN probes) at these steps besides the checkpoints: where a run's features change first.
# Step 0 is the initialisation: the teacher's is the random floor and the control's random teacher. The
# finer curve (steps 0, 5, 20, 50, 100 with the attentive probe) is benchmarks/recipe.py's (README).
EARLY_STEPS = (0, 20)
# 8 frames (stride 8: the clip spans 57 of 64 frames, most of the motion) of 32x32 crops: 4x4x4 = 64 tokens.
CLIP = ("--data.crop_size=32", "--data.num_frames=8", "--data.frame_stride=8")
# The ceiling's recipe (small): 5e-4 at batch 32 (4e-3 per 256 by the linear rule), warmed up from 1e-4, cosine
# to 1e-5, AdamW betas (0.9, 0.999), weight decay 0.04 -> 0.1. Of the recipes measured it is the one whose
# encoder leads the random one on k-NN (40.0 vs 21.7%; linear 74.3 vs 28.3), which the student-of-supervised
# claim is measured on; at MAE's betas (0.9, 0.95) and 2e-4 it led on the linear probe only (README).
SUPERVISED = ("--optim.lr=4e-3", "--optim.start_lr=8e-4", "--optim.final_lr=8e-5", "--optim.weight_decay=0.04",
              "--optim.final_weight_decay=0.1", "--optim.betas=[0.9,0.999]")
# medium: at 5e-4 its supervised run sat at ln 4 for 600 of its 800 steps; at 2e-4 it learns from step 260 (README)
SUPERVISED_MEDIUM = ("--optim.lr=1.6e-3",)
SIZES = {
    # seconds, for the test suite: a 2-block model
    "tiny": DemoSize("directions4", 40, 40, 12, 12, 12, 4, 2, 2, 4, 2, 1,
                     ("--data.frame_stride=8", "--data.shuffle_buffer=16"), config="debug"),
    # the default: under 20 minutes on 2 CPU cores
    "small": DemoSize("directions4", 400, 300, 100, 60, 400, 32, 4, 2, 15, 1, 2, CLIP,
                      supervised_args=SUPERVISED),
    # longer runs of the same model on more data
    "medium": DemoSize("directions4", 800, 300, 800, 900, 800, 32, 6, 4, 50, 3, 2, CLIP,
                       supervised_args=SUPERVISED_MEDIUM),
}


# the demo's runs: report name -> folder under runs/demo-SIZE/
RUNS = {"supervised": "supervised", "teacher": "teacher", "student": "student",
        "student of supervised": "student_of_supervised", "student of random": "student_of_random",
        "V-JEPA (EMA)": "vjepa"}


class Demo:
    def __init__(self, size: str, out: Path, shards: Path, cache: Path, loader: str):
        self.size_name, self.size = size, SIZES[size]
        self.out, self.shards_root, self.cache_root = out, shards, cache
        self.loader = loader
        self.t0 = time.perf_counter()
        self.name = out.name

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.t0
        print(f"\n== [{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {text}", flush=True)

    def run(self, args: list[str]) -> None:
        printable = " ".join(a if " " not in a else repr(a) for a in args)
        print(f"$ {printable}", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable if a == "python" else a for a in args], cwd=REPO, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"demo step failed (exit {proc.returncode}): {printable}")

    def train_args(self, stage: str, run_dir: Path, steps: int, *extra: str) -> list[str]:
        every = max(1, -(-steps // self.size.checkpoints))  # ceil: exactly `checkpoints` exports, the last at the end
        early = [s for s in EARLY_STEPS if s < steps]  # the learning curve's first points, probed as they pass
        return ["python", "salt/train.py", "--config", self.size.config, "--stage", stage, "--shards", str(self.train_shards),
                "--run-dir", str(run_dir), "--steps", str(steps), f"--data.batch_size={self.size.batch_size}",
                f"--data.loader={self.loader}", f"--run.checkpoint_every={every}", "--run.export_history=true",
                f"--run.log_every={max(1, min(20, steps // 10))}", "--run.tensorboard=false",
                f"--optim.warmup_steps={max(1, steps // 10)}", f"--run.export_steps=[{','.join(map(str, early))}]", f"--run.probe_every={every}",
                f"--run.probe_shards={self.val_shards}", f"--run.probe_samples={self.size.val_videos}",
                *self.size.model_args, *extra]

    @property
    def train_shards(self) -> Path:
        return self.shards_root / f"{self.name}-train"

    @property
    def val_shards(self) -> Path:
        return self.shards_root / f"{self.name}-val"

    @staticmethod
    def finished(run_dir: Path, steps: int) -> bool:
        summary = run_dir / "summary.json"
        return summary.exists() and json.loads(summary.read_text()).get("step") == steps

    def train(self, stage: str, run_dir: Path, steps: int, *extra: str) -> dict:
        if not self.finished(run_dir, steps):
            saved = run_dir / "config.yaml"
            if saved.exists() and yaml.safe_load(saved.read_text())["run"]["steps"] != steps:
                raise SystemExit(f"{run_dir} holds a run of another length (an earlier demo size or version); "
                                 f"remove {self.out} to start the demo over")
            resume = ["--resume"] if (run_dir / "checkpoints" / "latest").exists() else []
            self.run(self.train_args(stage, run_dir, steps, *extra) + resume)
        return json.loads((run_dir / "summary.json").read_text())

    # ------------------------------------------------------------------ steps

    def data(self) -> None:
        self.say(f"synthetic videos and shards ({self.size.train_videos} train, {self.size.val_videos} val)")
        for split, videos, seed in (("train", self.size.train_videos, 0), ("val", self.size.val_videos, 1)):
            raw = self.out / "data" / split
            shards = self.train_shards if split == "train" else self.val_shards
            if not (raw / "labels.csv").exists():
                self.run(["python", "-m", "dataprep.synth", "--task", self.size.task, "--out", str(raw), "--videos",
                          str(videos), "--seed", str(seed)])
            if not (shards / "manifest.json").exists():
                self.run(["python", "-m", "dataprep.shards", "--input", str(raw), "--out", str(shards),
                          "--short-side", "64", "--shard-samples", "100"])

    def cached_student(self, teacher: Path, name: str, run_dir: Path) -> dict:
        """A student of the frozen `teacher` from its target cache (cache/DEMO-NAME): the two students of the
        student-machinery claim are trained alike."""
        s = self.size
        cache = self.cache_root / f"{self.name}-{name}"
        if not (cache / "meta.json").exists():
            self.run(["python", "-m", "dataprep.targets", "--teacher", str(teacher), "--shards", str(self.train_shards),
                      "--out", str(cache), "--views", str(s.cache_views), "--dtype", "bf16", "--config", s.config,
                      "--loader", self.loader, *[a for a in s.model_args if a.startswith("--data.")]])
        return self.train("student", run_dir, s.student_steps, "--targets.cache", str(cache))

    def vjepa_steps(self, budget: float) -> int:
        """Steps of the V-JEPA baseline that spend `budget` FLOPs."""
        from salt.config import load_config
        from salt.stages import steps_for_budget

        overrides = ["stage=vjepa", f"data.batch_size={self.size.batch_size}"] + [a[2:] for a in self.size.model_args]
        return steps_for_budget(load_config(self.size.config, overrides), budget)

    def probe(self, encoder: Path, out: Path, baseline: str | None = None) -> dict:
        if not out.exists():
            s = self.size
            args = ["python", "-m", "salt.eval.probe", "--encoder", str(encoder), "--train", str(self.train_shards),
                    "--val", str(self.val_shards), "--max-epochs", str(s.probe_max_epochs), "--eval-every",
                    str(max(1, s.probe_max_epochs // 10)), "--seeds", str(s.probe_seeds), "--train-views",
                    str(s.probe_train_views), "--eval-clips", "2", "--eval-crops", "1",
                    "--batch-size", str(s.batch_size), "--loader", self.loader, "--json", str(out)]
            # the baselines are one long vector per clip: linear and k-NN read them (an attentive probe over
            # one token is an MLP, not the protocol)
            self.run(args + (["--baseline", baseline, "--no-attentive"] if baseline else []))
        return json.loads(out.read_text())

    def main(self) -> Path:
        s = self.size
        self.out.mkdir(parents=True, exist_ok=True)
        self.data()
        runs_dir = {name: self.out / folder for name, folder in RUNS.items()}

        self.say(f"the ceiling: supervised, {s.supervised_steps} steps (same encoder + attentive head on the labels)")
        supervised = self.train("supervised", runs_dir["supervised"], s.supervised_steps, *s.supervised_args)

        self.say(f"stage 1: teacher, {s.teacher_steps} steps (pixel reconstruction, multiblock masks)")
        teacher = self.train("teacher", runs_dir["teacher"], s.teacher_steps)
        random_teacher = runs_dir["teacher"] / "export" / "step_00000000"  # the teacher's initialisation

        self.say(f"stage 2: student of the pixel teacher, {s.student_steps} steps")
        student = self.train("student", runs_dir["student"], s.student_steps, "--teacher", str(runs_dir["teacher"]))

        self.say(f"the student machinery on a good teacher: the supervised encoder's targets cached ({s.cache_views} "
                 f"views per clip), a student trained from them ({s.student_steps} steps, no labels)")
        student_sup = self.cached_student(runs_dir["supervised"], "supervised", runs_dir["student of supervised"])

        self.say(f"the control: the same student of the random teacher (the teacher's step 0), {s.student_steps} steps")
        student_rnd = self.cached_student(random_teacher, "random", runs_dir["student of random"])

        budget = teacher["train_flops"] + student["train_flops"]
        steps = self.vjepa_steps(budget)
        self.say(f"V-JEPA baseline (EMA target) at the teacher+student budget: {fmt_flops(budget)}, {steps} steps")
        vjepa = self.train("vjepa", runs_dir["V-JEPA (EMA)"], steps)

        self.say(f"frozen probes: attentive ({s.probe_seeds} seeds, held-out selection), linear and k-NN, with 95% "
                 "intervals, on every encoder, the random floor and the pixel baselines")
        probes_dir = self.out / "probes"
        probes_dir.mkdir(exist_ok=True)
        probes = {
            "random init": self.probe(random_teacher, probes_dir / "random.json"),
            "pixels": self.probe(random_teacher, probes_dir / "pixels.json", baseline="pixels"),
            "frame differences": self.probe(random_teacher, probes_dir / "frame_diff.json", baseline="frame-diff"),
        }
        for name, folder in RUNS.items():
            probes[name] = self.probe(runs_dir[name], probes_dir / f"{folder}.json")

        self.say("loader throughput and the report")
        loader = self.loader_throughput()
        runs = {"teacher": teacher, "student": student, "student of supervised": student_sup,
                "student of random": student_rnd, "V-JEPA (EMA)": vjepa, "supervised": supervised}
        report = write_report(self.out, size=self.size_name, size_cfg=asdict(s), runs=runs, probes=probes,
                              loader=loader, run_dirs=runs_dir, elapsed_s=time.perf_counter() - self.t0)
        self.say(f"done: {report}")
        print(report.read_text().split("## Loss curves")[0])
        return report

    def loader_throughput(self, seconds: float = 5.0) -> dict:
        """Clips/s of both loaders on the training shards (salt.data.throughput, as benchmarks/loader.py measures)."""
        from salt.config import load_config
        from salt.data.throughput import measure, run_loader

        cfg = load_config(self.size.config, [f"data.shards={self.train_shards}", f"data.batch_size={self.size.batch_size}"]
                          + [a[2:] for a in self.size.model_args if a.startswith("--data.")]).data
        return {kind: measure(lambda kind=kind: run_loader(cfg, kind), seconds)["clips_per_s"] for kind in LOADERS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m salt.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small",
                    help="tiny: a smoke run (minutes); small: the calibrated experiment, under 20 min on 2 CPU cores; "
                         "medium: the same with longer runs on more data")
    ap.add_argument("--out", default=None, help="run folder (default runs/demo-SIZE)")
    ap.add_argument("--shards", default="shards", help="where the demo's shard sets go (default shards/)")
    ap.add_argument("--cache", default="cache", help="where the teacher-target cache goes (default cache/)")
    ap.add_argument("--loader", choices=LOADERS, default="dali", help="dali (default) or reference")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else REPO / "runs" / f"demo-{args.size}"
    demo = Demo(args.size, out, Path(args.shards) if Path(args.shards).is_absolute() else REPO / args.shards,
                Path(args.cache) if Path(args.cache).is_absolute() else REPO / args.cache, args.loader)
    demo.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
