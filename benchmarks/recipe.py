"""Where self-supervised training loses (or builds) features: train variants of a stage, then probe every
exported checkpoint on the demo's task.

    python benchmarks/recipe.py --name lr --stage teacher --steps 400 \
        --variant lr1e-3 --optim.lr=1e-3 --variant lr5e-5 --optim.lr=5e-5 ...

Each `--variant NAME` is followed by the overrides of that variant, on top of the demo's clip geometry
and batch and of the overrides given before the first `--variant` (every variant's). Every variant trains with exports at `--export-steps` (step 0 is the
initialisation itself) and at the end; each export is read by the linear probe (BatchNorm + linear),
k-NN (plain and standardised) and, at `--attentive-at` steps, the attentive probe; beside the probes,
the feature diagnostics of salt.eval.diagnostics on the first validation clips. The floors (random init,
pixels, frame differences) are probed once per sweep. Prints a table; writes
benchmarks/results/recipe/NAME.json. Runs and probes are skipped when already done (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, interval, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GEOMETRY = ["--data.crop_size=32", "--data.num_frames=8", "--data.frame_stride=8"]  # the demo's clips


def parse_variants(items: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """['--c=0', '--variant', 'a', '--x=1', '--variant', 'b'] -> (['--c=0'], [('a', ['--x=1']), ('b', [])]):
    the overrides before the first --variant are every variant's."""
    variants: list[tuple[str, list[str]]] = []
    i = items.index("--variant") if "--variant" in items else len(items)
    common = items[:i]
    while i < len(items):
        if i + 1 >= len(items):
            raise SystemExit("--variant needs a NAME")
        name, i = items[i + 1], i + 2
        overrides = []
        while i < len(items) and items[i] != "--variant":
            overrides.append(items[i])
            i += 1
        variants.append((name, overrides))
    return common, variants


def train(run: Path, stage: str, steps: int, overrides: list[str], export_steps: list[int], args) -> None:
    summary = run / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("step") == steps:
        return
    resume = ["--resume"] if (run / "checkpoints" / "latest").exists() else []
    cmd = [sys.executable, "salt/train.py", "--config", args.config, "--stage", stage, "--shards", args.train,
           "--run-dir", str(run), "--steps", str(steps), f"--data.batch_size={args.batch_size}",
           f"--run.checkpoint_every={steps}", "--run.export_history=true", f"--run.log_every={args.log_every}",
           "--run.tensorboard=false", f"--run.export_steps=[{','.join(map(str, export_steps))}]",
           *GEOMETRY, *args.common, *overrides, *resume]
    print("$ " + " ".join(cmd[1:]), flush=True)
    log = run.with_suffix(".log")
    run.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"training failed (exit {proc.returncode}); see {log}")


class Prober:
    """Features of one encoder on the demo's shards, read by every probe, plus its diagnostics."""

    def __init__(self, args) -> None:
        from salt.eval.probe import ProbeSettings

        self.args = args
        self.settings = ProbeSettings(max_epochs=args.attentive_epochs, eval_every=max(1, args.attentive_epochs // 10),
                                      seeds=args.seeds)
        self.cache = Path(args.out) / "probes"
        self.cache.mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, encoder, info, attentive: bool) -> dict:
        out = self.cache / f"{key}{'_att' if attentive else ''}.json"
        if out.exists():
            return json.loads(out.read_text())
        import torch

        from salt.eval.diagnostics import feature_diagnostics
        from salt.eval.intervals import bootstrap
        from salt.eval.knn import knn_correct
        from salt.eval.linear import linear_probe_correct
        from salt.eval.probe import extract_probe_features, loader_configs, train_probe

        a = self.args
        t0 = time.perf_counter()
        train_cfg, val_cfg = loader_configs(a.train, a.val, num_frames=info.num_frames, crop_size=info.img_size,
                                            frame_stride=info.frame_stride, batch_size=32, eval_clips=2,
                                            eval_crops=1, threads=2, seed=0)
        train, val, classes = extract_probe_features(encoder, train_cfg, val_cfg, loader=a.loader, train_views=2,
                                                     device=torch.device("cpu"))
        row = {"knn": bootstrap(knn_correct(train, val, classes).numpy()).to_json(),
               "knn_std": bootstrap(knn_correct(train, val, classes, standardize=True).numpy()).to_json()}
        linear, linear_fit = linear_probe_correct(train, val, classes, seeds=a.seeds)
        row["linear"], row["linear_train_top1"] = bootstrap(linear.numpy()).to_json(), sum(linear_fit) / len(linear_fit)
        if attentive:
            res = train_probe(train, val, classes, self.settings)
            row["attentive"] = bootstrap(res.correct.numpy()).to_json()
            row["attentive_train_top1"] = sum(res.train_top1) / len(res.train_top1)
        if hasattr(encoder, "blocks"):
            row["diagnostics"] = feature_diagnostics(encoder, self.diagnostic_clips(val_cfg))
        row["probe_s"] = time.perf_counter() - t0
        out.write_text(json.dumps(row, indent=1))
        return row

    def diagnostic_clips(self, val_cfg):
        """The first 64 validation clips, evaluation view: the same clips for every encoder."""
        from dataclasses import replace

        import torch

        from salt.data.loaders import open_loader

        cfg = replace(val_cfg, eval_clips=1, eval_crops=1, batch_size=64)
        with open_loader(cfg, self.args.loader, device=torch.device("cpu")) as loader:
            return next(iter(loader)).model_input("cpu")


PROBES = ("attentive", "linear", "knn", "knn_std")


def seed_groups(rows: list[dict], final_step: int) -> list[dict]:
    """Rows of variants named GROUP_sN at `final_step` -> per GROUP (two seeds or more), each probe's mean and
    95% t-interval over its seeds, the seeds' own figures and the last logged loss's mean."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        group, _, seed = r["variant"].rpartition("_s")
        if r["step"] == final_step and group and seed.isdigit():
            groups.setdefault(group, []).append(r)
    out = []
    for group, members in groups.items():
        if len(members) < 2:
            continue
        row = {"group": group, "variants": [r["variant"] for r in members],
               "loss": interval([r["loss"] for r in members])["mean"]}
        for probe in PROBES:
            if all(probe in r for r in members):
                values = [r[probe]["mean"] for r in members]
                row[probe] = {**interval(values), "seeds": values}
        out.append(row)
    return out


def pct(e: dict | None) -> str:
    return "" if not e else f"{100 * e['mean']:.1f} [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="sweep name: results go to benchmarks/results/recipe/NAME.json")
    ap.add_argument("--stage", default="teacher", help="the stage every variant trains (default teacher)")
    ap.add_argument("--steps", type=int, default=400, help="steps per variant (default 400, the demo's teacher)")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--export-steps", type=int, nargs="*", default=[0, 5, 20, 50, 100])
    ap.add_argument("--attentive-at", type=int, nargs="*", default=[],
                    help="steps whose exports the attentive probe also reads (the end always)")
    ap.add_argument("--attentive-epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1, help="probe seeds (attentive and linear)")
    ap.add_argument("--train", default=str(REPO / "shards" / "demo-small-train"))
    ap.add_argument("--val", default=str(REPO / "shards" / "demo-small-val"))
    ap.add_argument("--loader", default="dali")
    ap.add_argument("--out", default=str(REPO / "runs" / "recipe"), help="run folders (default runs/recipe)")
    ap.add_argument("--floors", action="store_true", help="also probe random init, pixels and frame differences")
    args, rest = ap.parse_known_args(argv)
    args.common, variants = parse_variants(rest)
    if not variants and not args.floors:
        ap.error("nothing to do: give --variant NAME [overrides] ... and/or --floors")

    from salt.eval.baselines import PixelBaseline
    from salt.models import build_encoder
    from salt.models.io import load_encoder

    prober = Prober(args)
    rows = []
    info = None
    for name, overrides in variants:
        run = Path(args.out) / args.name / name
        train(run, args.stage, args.steps, overrides, args.export_steps, args)
        steps = sorted({s for s in args.export_steps if s < args.steps} | {args.steps})
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        resolved = yaml.safe_load((run / "config.yaml").read_text())  # what the run trained with
        for step in steps:
            encoder, info = load_encoder(run / "export" / f"step_{step:08d}")
            r = prober(f"{args.name}_{name}_{step}", encoder, info, attentive=step in args.attentive_at
                       or step == args.steps)
            at = [m["loss"] for m in logged if m["step"] <= max(step, logged[0]["step"])]
            rows.append({"variant": name, "overrides": " ".join(overrides), "step": step,
                         "loss": at[-1] if step else None, "optim": resolved["optim"], "masks": resolved["masks"],
                         "global_batch": args.batch_size, **r})
    if args.floors:
        like = Path(args.out) / args.name / variants[0][0] / "export" if variants else None
        if like is None:
            ap.error("--floors needs a variant to take the architecture from")
        _, info = load_encoder(like)
        import torch

        torch.manual_seed(0)
        random = build_encoder(info.size, img_size=info.img_size, num_frames=info.num_frames, patch_size=info.patch_size,
                               tubelet_size=info.tubelet_size, depth=info.depth, use_rope=info.use_rope)
        for name, enc in (("random init", random), ("pixels", PixelBaseline("pixels")),
                          ("frame differences", PixelBaseline("frame-diff"))):
            rows.append({"variant": name, "step": 0, **prober(f"floor_{name.replace(' ', '_')}", enc, info, True)})

    table = [{"variant": r["variant"], "step": r["step"], "loss": r.get("loss"),
              "attentive": pct(r.get("attentive")), "linear": pct(r["linear"]), "k-NN": pct(r["knn"]),
              "k-NN std": pct(r["knn_std"]),
              **({k: r["diagnostics"][k] for k in ("rankme", "feature_std", "token_cosine", "clip_cosine")}
                 if "diagnostics" in r else {})} for r in rows]
    print(format_table(table, ["variant", "step", "loss", "attentive", "linear", "k-NN", "k-NN std", "rankme",
                               "feature_std", "token_cosine", "clip_cosine"]))
    over_seeds = seed_groups(rows, args.steps)
    if over_seeds:
        print(f"\nover seeds, step {args.steps}: mean [95% t-interval over seeds]")
        print(format_table([{"group": g["group"], "seeds": len(g["variants"]), "loss": g["loss"],
                             **{k: pct(g.get(k)) for k in PROBES}} for g in over_seeds],
                           ["group", "seeds", "loss", *PROBES]))
    path = write_result(REPO / "benchmarks" / "results" / "recipe" / f"{args.name}.json", f"recipe_{args.name}",
                        {k: v for k, v in vars(args).items()}, rows, {"variants": variants, "over_seeds": over_seeds})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
