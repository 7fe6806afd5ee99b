"""Tier 1 of the GPU suite: the users' own commands end to end on one GPU, then the ViT-L training steps.
It needs no DALI (the commands read through the reference loader, `--data.loader=reference`).

    python benchmarks/gpu/rehearsal.py --out DIR [--budget-s 260]     # on the GPU machine (tier1.sh)
    python benchmarks/gpu/rehearsal.py --out DIR --dry                  # the same commands on the CPU

The commands, in order, each timed and its exit code checked (a failure is a row, not the end):
  synthetic videos (`python -m dataprep.synth`) → `python -m dataprep.shards` (a training and a held-out
  set) → `deepspeed salt/train.py --stage teacher` (NCCL, log steps, checkpoints; SIGTERM to the rank →
  exit 75 with a checkpoint, then `--resume` to the end) → `python -m dataprep.targets` on the GPU →
  `--stage student` with the online teacher and from the cache → `python -m salt.eval.probe` on the GPU.
Then the training step of ViT-L teacher, student (cached targets, online teacher) and V-JEPA at the
largest batch that fits, eager and compiled, with MFU against the bf16 matmul peak measured here. The
most valuable rows come first; once --budget-s is spent the rest are recorded as skipped. suite.json is
rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import format_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXIT_STOPPED = 75


@dataclass(frozen=True)
class Sizes:
    """The rehearsal's sizes: the same commands on a GPU and, dry, on the CPU."""

    videos: int
    teacher_steps: int
    student_steps: int
    step_size: str  # the model size of the step measurements
    clip: tuple[int, int]  # (frames, crop) of the step measurements
    batches: dict[str, tuple[int, ...]]  # per stage, tried in order until one does not fit
    steps: int
    warmup: int


GPU = Sizes(videos=48, teacher_steps=24, student_steps=12, step_size="large", clip=(16, 224),
            batches={"teacher": (32, 64, 128, 192), "student-cached": (32, 64, 128, 192), "student": (32, 64, 96),
                     "vjepa": (32, 64, 96)}, steps=4, warmup=2)
DRY = Sizes(videos=16, teacher_steps=12, student_steps=4, step_size="tiny", clip=(8, 32),
            batches={"teacher": (2, 4), "student-cached": (2, 4), "student": (2,), "vjepa": (2,)}, steps=1, warmup=1)
# (stage, compiled), the most valuable first: the teacher and the cached student are what users train most.
# STEP_PLAN fits tier 1's budget (tests/test_gpu_suite.py); EXTRA_STEPS run while time is left.
STEP_PLAN = (("teacher", False), ("student-cached", False), ("teacher", True))
EXTRA_STEPS = (("student", False), ("vjepa", False), ("student-cached", True))
CONFIG = ["--config", "debug", "--data.loader=reference", "--run.tensorboard=false"]


# ---------------------------------------------------------------- what the plan costs on the GPU machine

GPU_START_S = 90.0  # a fresh machine starts in a minute or more (the device tool's notes)
INSTALL_S = 10.0  # tier1.sh: checking and installing the carried wheels (pip, no network)
CUDA_PROCESS_S = 5.0  # per command that uses the GPU: CUDA context and NCCL set-up, not paid on the CPU
GPU_COMMANDS = ("teacher", "targets", "student", "probe")  # commands whose names start so use the GPU
CASE_GPU_S = {False: 30.0, True: 80.0}  # per ViT-L step case (eager, compiled): build on the device, batches
# tried (warm-up and timed steps of well under a second each at these batches), compilation
BUDGET_S = 360.0  # tier 1's device time, start included


def estimated_gpu_seconds(command_seconds: dict[str, float], plan=STEP_PLAN) -> float:
    """Device time of tier 1: the machine's start, each command as long as it took in the dry run (tiny
    models: start-up, imports and tiny-model steps dominate on either machine) plus its CUDA set-up, and
    each step case."""
    return (GPU_START_S + INSTALL_S
            + sum(s + CUDA_PROCESS_S * name.startswith(GPU_COMMANDS) for name, s in command_seconds.items())
            + sum(CASE_GPU_S[compiled] for _, compiled in plan))


# ---------------------------------------------------------------- commands


def python() -> str:
    return sys.executable


def deepspeed_cmd(*args: str) -> list[str]:
    launcher = Path(sys.executable).parent / "deepspeed"
    head = [str(launcher)] if launcher.exists() else [python(), "-m", "deepspeed.launcher.runner"]
    return head + ["--num_gpus", "1", "--master_port", str(29500 + os.getpid() % 1000), *args]


def run(name: str, cmd: list[str], env: dict, log_dir: Path, timeout: float, expect: int = 0) -> dict:
    t0 = time.monotonic()
    log = log_dir / f"{name}.log"
    with open(log, "w") as out:
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    row = {"command": name, "argv": " ".join(cmd[:6]) + " ...", "rc": rc, "expected_rc": expect, "ok": rc == expect,
           "seconds": time.monotonic() - t0}
    if not row["ok"]:
        row["tail"] = log.read_text()[-1500:]
    return row


def _rank_pids(launcher_pid: int) -> list[int]:
    """The training ranks under a `deepspeed` launcher (its grandchildren running salt/train.py)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(status.parent.name)
            cmd = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if "salt/train.py" in cmd and "--local_rank" in cmd and _descends(pid, launcher_pid):
            found.append(pid)
    return found


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


def stop_and_resume(train: list[str], run_dir: Path, env: dict, log_dir: Path, timeout: float) -> list[dict]:
    """The teacher run, stopped by SIGTERM to its rank once it has logged (exit 75, a checkpoint), then
    continued with --resume to its last step."""
    t0 = time.monotonic()
    log = log_dir / "teacher.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(deepspeed_cmd(*train), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        metrics, deadline, signalled = run_dir / "metrics.jsonl", time.monotonic() + timeout, False
        while proc.poll() is None and time.monotonic() < deadline:
            if not signalled and metrics.exists() and metrics.read_text().count("\n") >= 1:
                for pid in _rank_pids(proc.pid):
                    os.kill(pid, signal.SIGTERM)
                signalled = True
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
    text = log.read_text()
    row = {"command": "teacher (SIGTERM to the rank)", "rc": rc, "expected_rc": EXIT_STOPPED,
           "ok": rc == EXIT_STOPPED and "continue with --resume" in text, "seconds": time.monotonic() - t0,
           "signalled": signalled}
    if not row["ok"]:
        row["tail"] = text[-1500:]
    resumed = run("teacher-resume", deepspeed_cmd(*train, "--resume"), env, log_dir, timeout)
    return [row, resumed]


def commands(work: Path, sizes: Sizes, env: dict, log_dir: Path, save, timeout: float) -> list[dict]:
    rows: list[dict] = []

    def add(new: list[dict] | dict) -> None:
        rows.extend(new if isinstance(new, list) else [new])
        save(rows)

    videos, shards = work / "videos", work / "shards"
    for split, seed in (("train", 0), ("val", 1)):
        add(run(f"synth-{split}", [python(), "-m", "dataprep.synth", "--task", "directions4", "--out",
                                   str(videos / split), "--videos", str(sizes.videos), "--seed", str(seed), "--size",
                                   "32", "--frames", "32"], env, log_dir, timeout))
        add(run(f"shards-{split}", [python(), "-m", "dataprep.shards", "--input", str(videos / split), "--out",
                                    str(shards / split), "--short-side", "32", "--quiet"], env, log_dir, timeout))
    teacher = work / "runs" / "teacher"
    train = ["salt/train.py", *CONFIG, "--stage", "teacher", "--shards", str(shards / "train"), "--run-dir",
             str(teacher), "--steps", str(sizes.teacher_steps), "--run.log_every=2", "--run.checkpoint_every=4"]
    add(stop_and_resume(train, teacher, env, log_dir, timeout))
    cache = work / "cache"
    add(run("targets", [python(), "-m", "dataprep.targets", "--teacher", str(teacher), "--shards",
                        str(shards / "train"), "--out", str(cache), "--views", "2", "--config", "debug", "--loader",
                        "reference", "--quiet"], env, log_dir, timeout))
    student = work / "runs" / "student"
    common = [*CONFIG, "--stage", "student", "--shards", str(shards / "train"), "--steps", str(sizes.student_steps),
              "--run.log_every=2", f"--run.checkpoint_every={sizes.student_steps}"]
    add(run("student-online", deepspeed_cmd("salt/train.py", *common, "--teacher", str(teacher), "--run-dir",
                                            str(student)), env, log_dir, timeout))
    add(run("student-cached", deepspeed_cmd("salt/train.py", *common, f"--targets.cache={cache}", "--run-dir",
                                            str(work / "runs" / "student_cache")), env, log_dir, timeout))
    add(run("probe", [python(), "-m", "salt.eval.probe", "--encoder", str(student), "--train", str(shards / "train"),
                      "--val", str(shards / "val"), "--max-epochs", "4", "--eval-every", "2", "--seeds", "1",
                      "--train-views", "1", "--eval-clips", "1", "--eval-crops", "1", "--loader", "reference",
                      "--json", str(work / "probe.json")], env, log_dir, timeout))
    for name, path in (("teacher", teacher), ("student", student)):
        rows.append({"command": f"{name} metrics", **_last_metrics(path)})
    probe = work / "probe.json"
    if probe.exists():
        result = json.loads(probe.read_text())
        rows.append({"command": "probe result", "attentive_top1": result["top1"], "knn_top1": result["knn"]["mean"],
                     "seconds_probe": result["seconds"]})
    save(rows)
    return rows


def _last_metrics(run_dir: Path) -> dict:
    try:
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError, IndexError):
        return {"ok": False}
    return {"ok": summary.get("finished", False), "step": last["step"], "loss": last["loss"],
            "clips_per_s": last["clips_per_s"], "precision": summary.get("precision"), "device": summary.get("device")}


# ---------------------------------------------------------------- the ViT-L steps


def step_rows(sizes: Sizes, device, deadline: float, save, dry: bool) -> list[dict]:
    import torch

    from benchmarks.gpu.steps import StepCase, measure_case
    from salt.config import load_config
    from salt.metrics import gpu_spec_peak, measure_matmul_tflops

    frames, crop = sizes.clip
    # the paper's clips (patch 16) on the GPU; the debug model's (patch 8) dry
    base = load_config("debug" if dry else None, [f"data.num_frames={frames}", f"data.crop_size={crop}",
                                                  "run.deepspeed_config=ds_configs/zero2.json"])
    if device.type == "cuda":
        measured = measure_matmul_tflops(device, torch.bfloat16, n=8192, repeats=5)
        spec = gpu_spec_peak(torch.cuda.get_device_name(device), torch.bfloat16)
    else:
        measured, spec = measure_matmul_tflops(device, torch.float32), None
    peak = (measured, "measured 8192^3 bf16 matmul" if device.type == "cuda" else "measured 1024^3 fp32 matmul")
    rows: list[dict] = []
    best: dict[str, int] = {}
    for stage, compiled in STEP_PLAN + EXTRA_STEPS:
        if compiled and stage not in best:
            continue
        batches = [best[stage]] if compiled else list(sizes.batches[stage])
        case = StepCase(stage, sizes.step_size, compile=compiled)
        if time.monotonic() > deadline:
            rows.append({"stage": stage, "size": case.size, "variant": case.variant, "skipped": "time budget"})
            save(rows)
            continue
        got = measure_case(base, case, device, batches=batches, steps=sizes.steps, warmup=sizes.warmup,
                           deadline=deadline, peak=peak)
        for r in got:
            if r.get("fits") and spec:
                r["mfu_spec"] = r["tflops"] / spec[0]
        fitting = [r["batch"] for r in got if r.get("fits")]
        if fitting and not compiled:
            best[stage] = max(fitting)
        rows.extend(got)
        save(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, help="folder for suite.json and the commands' logs")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S - GPU_START_S - INSTALL_S,
                    help="stop starting step measurements after this long (default: tier 1's device time less "
                         "the machine's start)")
    ap.add_argument("--dry", action="store_true", help="on the CPU, tiny sizes: the same commands and code")
    ap.add_argument("--command-timeout", type=float, default=240.0, help="seconds per command")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if args.dry:
        env["DS_ACCELERATOR"] = "cpu"
        os.environ["DS_ACCELERATOR"] = "cpu"
    import torch

    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU rehearsal", file=sys.stderr)
        return 2
    sizes = DRY if args.dry else GPU
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "dry": args.dry,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    state: dict = {"commands": [], "steps": []}

    def save(section: str):
        def write(rows: list[dict]) -> None:
            state[section] = rows
            cmd_s = {r["command"]: r["seconds"] for r in state["commands"] if "seconds" in r}
            write_result(out / "suite.json", "gpu-suite-tier1", {**vars(args), **facts, "sizes": sizes.__dict__,
                                                                  "wall_s": time.monotonic() - t_start},
                         state["steps"], {"commands": state["commands"], "command_seconds": cmd_s,
                                          "estimated_gpu_s": estimated_gpu_seconds(cmd_s)})
        return write

    with tempfile.TemporaryDirectory(prefix="salt-rehearsal-") as work:
        commands(Path(work), sizes, env, out, save("commands"), args.command_timeout)
    from salt.engine.distributed import init_distributed

    step_rows(sizes, init_distributed().device, deadline, save("steps"), args.dry)  # a group of one, as a run
    print(format_table(state["commands"], ["command", "rc", "expected_rc", "ok", "seconds", "loss", "clips_per_s",
                                           "attentive_top1", "knn_top1"]))
    print()
    print(format_table(state["steps"], ["size", "stage", "variant", "batch", "fits", "step_s", "clips_per_s", "tflops",
                                        "mfu", "mfu_spec", "memory_gb", "skipped", "error"]))
    failed = [r["command"] for r in state["commands"] if r.get("ok") is False]
    print(f"wrote {out / 'suite.json'} in {time.monotonic() - t_start:.0f} s; "
          f"{'every command as expected' if not failed else 'unexpected: ' + ', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
