"""The GPU suite: one command on a machine with one GPU measures the loader and every stage's training
step, and writes suite.json (and a table on stdout) into the folder it is given.

    python benchmarks/gpu/suite.py --out DIR [--shards-root .gpu/shards] [--budget-s 420]
    python benchmarks/gpu/suite.py --out DIR --dry --shards-root DIR   # the same code on the CPU, tiny sizes

In order, each until the time budget is spent (what is left is recorded as skipped):
  1. DALI loader clips/s on H.264 and HEVC training-rate shards, decoded by NVDEC (`mixed`), views
     cut on the GPU, uint8 hand-off normalised on the GPU; then VP9 decoded on the CPU with the
     crop and resize on the GPU (data.gpu_decode=false).
  2. ViT-L teacher, student (online teacher), student (cached targets) and V-JEPA steps in bf16
     under ZeRO-2: the largest batch that fits, eager and with activation checkpointing; then
     torch.compile at those batches (run.compile, model.grad_checkpointing).
  3. ViT-g teacher, eager and checkpointed: whether checkpointing is needed at that scale.
It ends with loader clips/s / training clips/s per stage and the fastest setting per stage and size.
`benchmarks/gpu/prepare.py` readies what the machine lacks (wheels, shards) and prints the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import format_table, write_result  # noqa: E402

STEP_STAGES = ("teacher", "student", "student-cached", "vjepa")


@dataclass(frozen=True)
class Plan:
    """What the suite measures; the dry plan is the same shape at CPU sizes."""

    loader_codecs: tuple[tuple[str, bool], ...]  # (shard set under --shards-root, decode on the GPU)
    loader_batch: int
    loader_seconds: float
    loader_threads: int
    large: str  # the ViT-L slot's model size
    giant: str  # the ViT-g slot's model size
    eager_batches: tuple[int, ...]
    ckpt_batches: tuple[int, ...]
    giant_batches: tuple[int, ...]
    compile_stages: tuple[str, ...]
    steps: int
    warmup: int


GPU_PLAN = Plan(loader_codecs=(("h264", True), ("hevc", True), ("vp9", False)), loader_batch=32,
                loader_seconds=10.0, loader_threads=min(8, os.cpu_count() or 1), large="large", giant="giant",
                eager_batches=(16, 32, 64, 128), ckpt_batches=(32, 64, 128, 256), giant_batches=(4, 8, 16, 32),
                compile_stages=("teacher", "student-cached"), steps=4, warmup=2)
DRY_PLAN = Plan(loader_codecs=(("vp9", True),), loader_batch=2, loader_seconds=0.5, loader_threads=1,
                large="tiny", giant="tiny", eager_batches=(2, 4), ckpt_batches=(4,), giant_batches=(2,),
                compile_stages=("teacher",), steps=1, warmup=1)


def loader_rows(plan: Plan, shards_root: Path, device: str, deadline: float) -> list[dict]:
    import torch

    from salt.data.config import LoaderConfig
    from salt.data.loaders import open_loader
    from salt.data.shardset import ShardSet
    from salt.data.throughput import measure

    rows = []
    for name, gpu_decode in plan.loader_codecs:
        root = shards_root / name
        if not (root / "manifest.json").exists():
            rows.append({"shards": name, "skipped": f"no shard set at {root}"})
            continue
        if time.monotonic() > deadline:
            rows.append({"shards": name, "skipped": "time budget"})
            continue
        shards = ShardSet(root, verify=False)
        clip = shards.manifest.get("train_clip") or {}
        cfg = LoaderConfig(shards=str(root), batch_size=min(plan.loader_batch, len(shards)), num_frames=clip.get("frames", 16),
                           frame_stride=clip.get("load_stride", 1), crop_size=224 if device == "gpu" else 32,
                           threads=plan.loader_threads, device=device, gpu_decode=gpu_decode)
        target = torch.device("cuda", 0) if device == "gpu" else torch.device("cpu")

        def batches(cfg=cfg, target=target):
            for batch in open_loader(cfg, "dali", device=target if device == "gpu" else None).endless():
                x = batch.model_input(target)  # normalised where training runs
                if target.type == "cuda":
                    torch.cuda.synchronize(target)
                yield x.shape[0]

        try:
            res = measure(batches, plan.loader_seconds)
        except Exception as e:  # noqa: BLE001  (a codec this machine's DALI cannot decode: reported, not fatal)
            rows.append({"shards": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            continue
        rows.append({"shards": name, "codec": shards.codec.name,
                     "decode": "gpu (NVDEC)" if device == "gpu" and gpu_decode else "cpu",
                     "augment": device, "batch": cfg.batch_size, **res})
    return rows


def step_rows(plan: Plan, base, device, deadline: float, workdir: Path, save) -> list[dict]:
    """save(rows) is called after every measurement, so a crash or a kill keeps what was measured."""
    import torch

    from benchmarks.gpu.steps import StepCase, export_random_teacher, largest_batch
    from salt.metrics import peak_tflops

    peak = peak_tflops(device, torch.bfloat16, None)
    # the online student's teacher; the giant slot runs the teacher stage only
    teachers = {plan.large: export_random_teacher(base, plan.large, str(workdir / f"teacher-{plan.large}"))}
    rows: list[dict] = []

    def best(stage: str, variant: str, size: str) -> int | None:
        fitting = [r["batch"] for r in rows if r.get("fits") and r["stage"] == stage and r["variant"] == variant
                   and r["size"] == size]
        return max(fitting) if fitting else None

    def run(case: StepCase, batches) -> None:
        rows.extend(largest_batch(base, case, device, batches=list(batches), steps=plan.steps, warmup=plan.warmup,
                                  teacher_path=teachers.get(case.size, ""), deadline=deadline, peak=peak))
        save(rows)

    for stage in STEP_STAGES:
        run(StepCase(stage, plan.large), plan.eager_batches)
    for stage in STEP_STAGES:
        run(StepCase(stage, plan.large, checkpointing=True), plan.ckpt_batches)
    for stage in plan.compile_stages:
        for ckpt in (False, True):
            b = best(stage, "ckpt" if ckpt else "eager", plan.large)
            if b:
                run(StepCase(stage, plan.large, checkpointing=ckpt, compile=True), [b])
    run(StepCase("teacher", plan.giant), plan.giant_batches)
    run(StepCase("teacher", plan.giant, checkpointing=True), plan.giant_batches)
    return rows


def summarise(loader: list[dict], steps: list[dict], plan: Plan) -> dict:
    """The fastest fitting setting per (size, stage), and loader clips/s over that stage's clips/s."""
    fastest: dict[str, dict] = {}
    for r in steps:
        if r.get("fits"):
            key = f"{r['size']}/{r['stage']}"
            if key not in fastest or r["clips_per_s"] > fastest[key]["clips_per_s"]:
                fastest[key] = r
    rates = [r["clips_per_s"] for r in loader if "clips_per_s" in r]
    loader_rate = max(rates) if rates else None
    return {"fastest": {k: {f: r[f] for f in ("variant", "batch", "clips_per_s", "mfu", "memory_gb")}
                        for k, r in fastest.items()},
            "loader_clips_per_s": loader_rate,
            "loader_over_training": {k: loader_rate / r["clips_per_s"] for k, r in fastest.items()}
            if loader_rate else {}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, help="folder for suite.json")
    ap.add_argument("--shards-root", default=".gpu/shards", help="holds the shard sets h264/, hevc/, vp9/")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this long")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes: the same code paths, in seconds")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    if args.dry:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    from salt.config import load_config
    from salt.engine.distributed import init_distributed

    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU check", file=sys.stderr)
        return 2
    plan = DRY_PLAN if args.dry else GPU_PLAN
    device_kind = "cpu" if args.dry else "gpu"
    dist = init_distributed()
    base = load_config("debug") if args.dry else load_config(None, ["data.num_frames=16", "data.crop_size=224"])
    base = replace(base, run=replace(base.run, deepspeed_config="ds_configs/zero2.json"))

    facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "dry": args.dry}
    try:
        import nvidia.dali as dali

        facts["dali"] = dali.__version__
    except ImportError:
        facts["dali"] = None
    config = {**vars(args), "plan": plan.__dict__, **facts}

    def save(loader: list[dict], steps: list[dict]) -> Path:
        """suite.json as it stands (written atomically after every measurement)."""
        return write_result(Path(args.out) / "suite.json", "gpu-suite", {**config, "wall_s": time.monotonic() - t_start},
                            steps, {"loader": loader, "summary": summarise(loader, steps, plan)})

    loader = loader_rows(plan, Path(args.shards_root), device_kind, deadline)
    save(loader, [])
    with tempfile.TemporaryDirectory(prefix="salt-gpu-suite-") as work:
        steps = step_rows(plan, base, dist.device, deadline, Path(work), lambda rows: save(loader, rows))
    summary = summarise(loader, steps, plan)

    print(format_table(loader, ["shards", "decode", "augment", "batch", "clips_per_s", "first_batch_s", "skipped",
                                "error"]))
    print()
    print(format_table(steps, ["size", "stage", "variant", "batch", "fits", "step_s", "clips_per_s", "mfu",
                               "memory_gb", "skipped", "error"]))
    print()
    print(json.dumps(summary, indent=1))
    path = save(loader, steps)
    print(f"wrote {path} in {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
