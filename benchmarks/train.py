"""Training throughput per process (per GPU with one): clips/s, data-wait fraction, model TFLOP/s and MFU
of each stage, from short runs of salt/train.py on the same shards (medians over the logged windows,
the first window — warm-up — left out).

    python benchmarks/train.py --shards shards/NAME [--config tiny] [--steps 60] [--stages teacher student vjepa]
                               [--nprocs 1] [--json OUT] [-- extra train.py flags]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def gpus_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def run_stage(stage: str, args: argparse.Namespace, run_dir: Path, teacher: Path | None, extra: list[str]) -> list[dict]:
    cmd = ["salt/train.py", "--config", args.config, "--stage", stage, "--shards", args.shards, "--run-dir",
           str(run_dir), "--steps", str(args.steps), f"--run.log_every={args.log_every}",
           f"--run.checkpoint_every={args.steps}", "--run.tensorboard=false", *extra]
    if teacher is not None:
        cmd += ["--teacher", str(teacher)]
    if args.nprocs > 1:
        launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.nprocs)]
        env = dict(os.environ)
        if not gpus_visible():  # CPU ranks where there is no GPU; where there is, the ranks use it
            env.setdefault("DS_ACCELERATOR", "cpu")
        full = launcher + cmd
    else:
        env, full = dict(os.environ), [sys.executable] + cmd
    print("$ " + " ".join(full), file=sys.stderr, flush=True)
    proc = subprocess.run(full, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--stages", nargs="+", default=["teacher", "student", "vjepa"])
    ap.add_argument("--nprocs", type=int, default=1, help="processes (GPUs) through the deepspeed launcher")
    ap.add_argument("--json", default=None, help="default benchmarks/results/train-<config>.json")
    args, extra = ap.parse_known_args(argv)
    extra = [e for e in extra if e != "--"]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = None
        for stage in args.stages:
            if stage == "student" and teacher is None:
                teacher = Path(tmp) / "teacher-for-student"
                run_stage("teacher", argparse.Namespace(**{**vars(args), "steps": 2}), teacher, None, extra)
            metrics = run_stage(stage, args, Path(tmp) / stage, teacher if stage == "student" else None, extra)
            if stage == "teacher":
                teacher = Path(tmp) / stage
            windows = metrics[1:] or metrics
            rows.append({
                "stage": stage, "processes": args.nprocs,
                "clips_per_s": statistics.median(r["clips_per_s"] for r in windows),
                "step_time_s": statistics.median(r["step_time_s"] for r in windows),
                "data_wait_frac": statistics.median(r["data_wait_frac"] for r in windows),
                "tflops": statistics.median(r["tflops"] for r in windows),
                "mfu": statistics.median(r["mfu"] for r in windows),
                "peak_tflops": windows[-1]["peak_tflops"],
                "final_loss": metrics[-1]["loss"],
            })
    print(format_table(rows, ["stage", "processes", "clips_per_s", "step_time_s", "data_wait_frac", "tflops", "mfu",
                              "peak_tflops"]))
    path = write_result(args.json or REPO / "benchmarks" / "results" / f"train-{Path(args.config).stem}.json",
                        "train", {**vars(args), "extra": extra}, rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
