"""`python -m salt.eval.probe`: frozen attentive-probe evaluation of an exported encoder.

The encoder is frozen (eval mode, no grad). Its token features are extracted once: `--train-views`
passes over the labelled training shards with training views (random clip start, random-resized
crop, flip; a flipped view of a direction-sensitive class is relabelled as the dataset's metadata
says, manifest.json `label_hflip`), and the validation shards with evaluation views (evenly spaced
clips x crops, centre crop). Two probes read them:

- attentive (learned query, cross-attention, linear head), trained on the stored features. Its epoch
  count and weight decay are chosen on a held-out fifth of the training videos, then `--seeds` probes
  train on all of them; validation logits are averaged over each sample's views;
- linear, MAE's protocol: a BatchNorm without affine in front of one linear layer, on mean-pooled
  features (`--seeds` seeds);
- k-NN on mean-pooled features, as they are and per-dimension standardised: no training, no seed.

`--baseline pixels|frame-diff` probes no encoder: the clips' pooled pixels or their frame differences
(salt.eval.baselines), at `--encoder`'s clip geometry.

Each top-1 comes with a 95% bootstrap interval over validation clips (and seeds), beside the band
that guessing would land in. Writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salt.atomic import write_json_atomic
from salt.data.config import LoaderConfig
from salt.data.loaders import LOADERS, open_loader
from salt.devices import process_device
from salt.eval.baselines import BASELINES, PixelBaseline
from salt.eval.features import FeatureSet, extract_features, to_device
from salt.eval.intervals import Estimate, bootstrap, chance_band
from salt.eval.knn import knn_correct
from salt.eval.linear import linear_probe_correct
from salt.models.attentive_pool import AttentiveProbe

CPU = torch.device("cpu")


@dataclass(frozen=True)
class ProbeSettings:
    """How the attentive probe trains. Epoch count and weight decay are chosen on a held-out part of the
    training set (never the validation set); the seeds then train on the whole training set."""

    max_epochs: int = 100
    eval_every: int = 10  # epochs between held-out evaluations (the candidate epoch counts)
    weight_decays: tuple[float, ...] = (0.01, 0.1)
    heldout_frac: float = 0.2
    lr: float = 3e-3  # 1e-3 left a label planted in 1 of 256 tokens at 89% held-out after 100 epochs; 3e-3: 99%
    warmup_epochs: int = 5
    batch_size: int = 64
    heads: int = 4
    seeds: int = 3


@dataclass
class AttentiveResult:
    correct: torch.Tensor  # (seeds, S_val) bool: each seed's prediction of each validation sample
    train_top1: list[float]  # per seed, on the whole training set at the end: has it fitted?
    epochs: int  # chosen on the held-out split
    weight_decay: float
    heldout_top1: float  # at the chosen epoch count and weight decay
    curve: list[dict]  # the selection runs: weight_decay, epoch, fit-split and held-out top-1
    seconds: float


@dataclass
class ProbeResult:
    attentive: Estimate | None  # validation top-1 over seeds and clips, with a 95% interval (None: not run)
    knn: Estimate  # training-free k-NN on pooled features
    knn_std: Estimate  # the same on per-dimension standardised features
    linear: Estimate  # MAE's linear probe (BatchNorm without affine, linear) on pooled features, over seeds
    linear_train_top1: float
    attentive_result: AttentiveResult | None
    num_classes: int
    train_examples: int  # training views (samples x train views)
    val_samples: int
    chance: float
    chance_band: tuple[float, float]  # where guessing lands on this many validation clips (95%)
    seconds: float

    @property
    def top1(self) -> float:
        return (self.attentive or self.linear).mean

    def to_json(self) -> dict:
        out = {"top1": self.top1, "knn": self.knn.to_json(), "knn_std": self.knn_std.to_json(),
               "linear": self.linear.to_json(), "linear_train_top1": self.linear_train_top1,
               "num_classes": self.num_classes, "train_examples": self.train_examples,
               "val_samples": self.val_samples, "chance": self.chance, "chance_band": list(self.chance_band),
               "seconds": self.seconds}
        a = self.attentive_result
        if a is not None and self.attentive is not None:
            out.update({"attentive": self.attentive.to_json(), "train_top1": float(np.mean(a.train_top1)),
                        "train_top1_per_seed": a.train_top1, "epochs": a.epochs, "weight_decay": a.weight_decay,
                        "heldout_top1": a.heldout_top1, "selection_curve": a.curve,
                        "per_seed_top1": a.correct.float().mean(1).tolist()})
        return out


def _examples(data: FeatureSet, samples: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (sample, view) of the chosen samples is one training example: (E, N, D) and (E,)."""
    tokens, labels = (data.tokens, data.labels) if samples is None else (data.tokens[samples], data.labels[samples])
    return tokens.flatten(0, 1), labels.repeat_interleave(tokens.shape[1])


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, s: ProbeSettings, *, weight_decay: float,
         epochs: int, seed: int, checkpoints: dict[int, list[FeatureSet]] | None = None,
         device: torch.device = CPU) -> tuple[nn.Module, dict]:
    """One probe, trained on `device` (the features stay on the host; each batch is copied there):
    linear warm-up then constant learning rate, so that stopping at any epoch is the same run as
    training for that many epochs (the selection runs and the final runs agree).
    checkpoints {epoch: [sets]}: top-1 on each set at that epoch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = AttentiveProbe(x.shape[-1], num_classes, num_heads=s.heads).to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=s.lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(x) / s.batch_size)
    warmup = max(1, s.warmup_epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    y_dev = y.to(device)
    seen: dict[int, list[float]] = {}
    for epoch in range(1, epochs + 1):
        probe.train()
        for idx in torch.randperm(len(x), generator=g).split(s.batch_size):
            loss = F.cross_entropy(probe(to_device(x[idx], device).float()), y_dev[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if checkpoints and epoch in checkpoints:
            seen[epoch] = [float(predict(probe, d, device=device).eq(d.labels).float().mean())
                           for d in checkpoints[epoch]]
    return probe, seen


def train_probe(train: FeatureSet, val: FeatureSet, num_classes: int, settings: ProbeSettings | None = None,
                seed: int = 0, device: torch.device | None = None) -> AttentiveResult:
    """train.tokens (S, V, N, D): each (sample, view) is one training example; val.tokens (S', V', N, D):
    logits averaged over V'. Chooses epochs and weight decay on a held-out split of the training samples,
    then trains `settings.seeds` probes on all of them."""
    s = settings or ProbeSettings()
    device = device or torch.device("cpu")
    t0 = time.perf_counter()
    # held out by source video: two views of one video never sit on both sides
    keys = train.keys or [str(i) for i in range(len(train.labels))]
    videos = sorted(set(keys))
    order = torch.randperm(len(videos), generator=torch.Generator().manual_seed(seed + 10_000)).tolist()
    n_held = max(1, round(s.heldout_frac * len(videos))) if len(videos) > 4 else 0
    held_videos = {videos[i] for i in order[:n_held]}
    held_idx = torch.tensor([i for i, k in enumerate(keys) if k in held_videos], dtype=torch.long)
    fit_idx = torch.tensor([i for i, k in enumerate(keys) if k not in held_videos], dtype=torch.long)
    candidates = sorted({*range(s.eval_every, s.max_epochs + 1, s.eval_every), s.max_epochs})
    curve, best = [], (-1.0, s.max_epochs, s.weight_decays[0])
    if n_held:
        fit, held = train.select(fit_idx), train.select(held_idx)
        x, y = _examples(fit)
        fit_eval = FeatureSet(fit.tokens[:, :1], fit.labels)
        for wd in s.weight_decays:
            _, seen = _fit(x, y, num_classes, s, weight_decay=wd, epochs=s.max_epochs, seed=seed,
                           checkpoints={e: [fit_eval, held] for e in candidates}, device=device)
            for epoch in candidates:
                fit_top1, held_top1 = seen[epoch]
                curve.append({"weight_decay": wd, "epoch": epoch, "fit_top1": fit_top1, "heldout_top1": held_top1})
                if held_top1 > best[0] + 1e-9:  # ties keep the fewer epochs / the smaller decay
                    best = (held_top1, epoch, wd)
    heldout_top1, epochs, wd = best
    x, y = _examples(train)
    train_eval = FeatureSet(train.tokens[:, :1], train.labels)
    correct, train_top1 = [], []
    for k in range(s.seeds):
        probe, _ = _fit(x, y, num_classes, s, weight_decay=wd, epochs=epochs, seed=seed + k, device=device)
        correct.append(predict(probe, val, device=device).eq(val.labels))
        train_top1.append(float(predict(probe, train_eval, device=device).eq(train.labels).float().mean()))
    return AttentiveResult(torch.stack(correct), train_top1, epochs, wd, heldout_top1, curve,
                           time.perf_counter() - t0)


@torch.no_grad()
def predict(probe: nn.Module, data: FeatureSet, batch_size: int = 256,
            device: torch.device = CPU) -> torch.Tensor:
    """(S,) predicted class per sample (on the CPU): softmax averaged over the sample's views, computed on
    `device` (the probe's)."""
    probe.eval()
    out = []
    for i in range(0, len(data.labels), batch_size):
        t = to_device(data.tokens[i:i + batch_size], device).float()  # (b, V, N, D)
        out.append(probe(t.flatten(0, 1)).unflatten(0, t.shape[:2]).softmax(-1).mean(1).argmax(-1))
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.long)


def evaluate_features(train: FeatureSet, val: FeatureSet, num_classes: int, settings: ProbeSettings | None = None,
                      seed: int = 0, knn_k: int = 20, device: torch.device | None = None,
                      attentive_probe: bool = True) -> ProbeResult:
    """Attentive probe (seeds, held-out selection; unless not `attentive_probe`), linear probe (seeds) and k-NN
    (plain and standardised) on the same features, each with a 95% interval; all computed on `device`
    (default: the CPU)."""
    t0 = time.perf_counter()
    s = settings or ProbeSettings()
    attentive = train_probe(train, val, num_classes, s, seed, device=device) if attentive_probe else None
    knn = knn_correct(train, val, num_classes, k=knn_k, device=device)
    knn_std = knn_correct(train, val, num_classes, k=knn_k, standardize=True, device=device)
    linear, linear_train = linear_probe_correct(train, val, num_classes, seeds=s.seeds, seed=seed, device=device)
    n = len(val.labels)
    return ProbeResult(attentive=bootstrap(attentive.correct.numpy(), seed=seed) if attentive else None,
                       knn=bootstrap(knn.numpy()[None], seed=seed), knn_std=bootstrap(knn_std.numpy()[None], seed=seed),
                       linear=bootstrap(linear.numpy(), seed=seed), linear_train_top1=float(np.mean(linear_train)),
                       attentive_result=attentive,
                       num_classes=num_classes, train_examples=train.tokens.shape[0] * train.tokens.shape[1],
                       val_samples=n, chance=1.0 / num_classes, chance_band=chance_band(num_classes, n),
                       seconds=time.perf_counter() - t0)


def loader_configs(shards_train: str, shards_val: str, *, num_frames: int, crop_size: int, frame_stride: int,
                   batch_size: int, eval_clips: int, eval_crops: int, threads: int, seed: int
                   ) -> tuple[LoaderConfig, LoaderConfig]:
    common = dict(num_frames=num_frames, crop_size=crop_size, frame_stride=frame_stride, batch_size=batch_size,
                  threads=threads, seed=seed)
    return (LoaderConfig(shards=shards_train, mode="train", **common),
            LoaderConfig(shards=shards_val, mode="eval", eval_clips=eval_clips, eval_crops=eval_crops, **common))


def extract_probe_features(encoder: nn.Module, train_cfg: LoaderConfig, val_cfg: LoaderConfig, *,
                           loader: str = "dali", train_views: int = 2, device: torch.device | None = None
                           ) -> tuple[FeatureSet, FeatureSet, int]:
    """(train, val, num_classes): `train_views` passes of training views (each view one row, labelled as
    the loader labels it: a mirrored view of a direction-sensitive class gets the mirrored class) and
    the fixed evaluation views of every validation sample."""
    device = device or process_device()
    encoder = encoder.to(device)
    with open_loader(train_cfg, loader, device=device) as train_loader:
        num_classes = train_loader.num_classes
        if num_classes < 2:
            raise ValueError(f"{train_cfg.shards} is not labelled (needs at least 2 classes)")
        train = FeatureSet.cat([extract_features(encoder, train_loader, 1, device) for _ in range(train_views)])
    with open_loader(val_cfg, loader, device=device) as val_loader:
        if val_loader.shards.classes != train_loader.shards.classes:
            raise ValueError(f"train and val shard sets have different classes: {train_loader.shards.classes} vs "
                             f"{val_loader.shards.classes}")
        val = extract_features(encoder, val_loader, val_cfg.views_per_sample, device)
    return train, val, num_classes


def probe_encoder(encoder: nn.Module, train_cfg: LoaderConfig, val_cfg: LoaderConfig, *, loader: str = "dali",
                  train_views: int = 2, settings: ProbeSettings | None = None, device: torch.device | None = None,
                  seed: int = 0, knn_k: int = 20, attentive_probe: bool = True) -> ProbeResult:
    device = device or process_device()
    train, val, num_classes = extract_probe_features(encoder, train_cfg, val_cfg, loader=loader,
                                                     train_views=train_views, device=device)
    return evaluate_features(train, val, num_classes, settings, seed=seed, knn_k=knn_k, device=device,
                             attentive_probe=attentive_probe)


def main(argv: list[str] | None = None) -> int:
    d = ProbeSettings()
    ap = argparse.ArgumentParser(prog="python -m salt.eval.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", required=True,
                    help="run folder, export folder, encoder.safetensors or a transformers V-JEPA 2 folder")
    ap.add_argument("--random-init", action="store_true",
                    help="same architecture as --encoder, randomly initialised weights (the floor)")
    ap.add_argument("--baseline", choices=BASELINES, default=None,
                    help="probe no encoder: the clips' pooled pixels or frame differences, at --encoder's clip "
                         "geometry (the baselines an encoder has to beat)")
    ap.add_argument("--no-attentive", action="store_true",
                    help="skip the attentive probe (linear and k-NN only: seconds instead of a minute)")
    ap.add_argument("--train", required=True, help="labelled training shard set")
    ap.add_argument("--val", required=True, help="labelled validation shard set")
    ap.add_argument("--max-epochs", type=int, default=d.max_epochs,
                    help=f"longest probe training considered (default {d.max_epochs})")
    ap.add_argument("--eval-every", type=int, default=d.eval_every,
                    help=f"epochs between held-out checks; each is a candidate epoch count (default {d.eval_every})")
    ap.add_argument("--weight-decays", type=float, nargs="+", default=list(d.weight_decays),
                    help=f"candidates chosen between on the held-out split (default {list(d.weight_decays)})")
    ap.add_argument("--heldout-frac", type=float, default=d.heldout_frac,
                    help=f"training videos held out for that choice (default {d.heldout_frac})")
    ap.add_argument("--lr", type=float, default=d.lr, help=f"probe learning rate (default {d.lr})")
    ap.add_argument("--seeds", type=int, default=d.seeds, help=f"probes trained per encoder (default {d.seeds})")
    ap.add_argument("--knn-k", type=int, default=20, help="neighbours of the k-NN probe (default 20)")
    ap.add_argument("--train-views", type=int, default=2,
                    help="passes over --train with fresh random views (default 2)")
    ap.add_argument("--eval-clips", type=int, default=2, help="evenly spaced clips per validation sample (default 2)")
    ap.add_argument("--eval-crops", type=int, default=3, help="crops along the long side per clip (default 3)")
    ap.add_argument("--batch-size", type=int, default=16, help="clips per loader batch (default 16)")
    ap.add_argument("--loader", choices=LOADERS, default="dali",
                    help="dali (default) or reference (PyAV: every codec on the CPU)")
    ap.add_argument("--threads", type=int, default=2, help="DALI threads or reference-loader workers (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="first probe seed; also the views' and the random init's")
    ap.add_argument("--json", default=None, help="write the result here (default: <encoder>/probe.json)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.max_epochs < 1 or args.eval_every < 1 or not 0 <= args.heldout_frac < 1:
        ap.error("need --seeds, --max-epochs, --eval-every >= 1 and 0 <= --heldout-frac < 1")

    from salt.models import build_encoder
    from salt.models.io import encoder_home, load_encoder

    try:
        encoder, info = load_encoder(args.encoder)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.random_init and args.baseline:
        ap.error("--random-init and --baseline are two different floors: pass one")
    if args.baseline:
        encoder = PixelBaseline(args.baseline)
    elif args.random_init:
        torch.manual_seed(args.seed)
        encoder = build_encoder(info.size, img_size=info.img_size, num_frames=info.num_frames,
                                patch_size=info.patch_size, tubelet_size=info.tubelet_size, depth=info.depth,
                                use_rope=info.use_rope)
    train_cfg, val_cfg = loader_configs(args.train, args.val, num_frames=info.num_frames, crop_size=info.img_size,
                                        frame_stride=info.frame_stride, batch_size=args.batch_size,
                                        eval_clips=args.eval_clips, eval_crops=args.eval_crops,
                                        threads=args.threads, seed=args.seed)
    settings = ProbeSettings(max_epochs=args.max_epochs, eval_every=args.eval_every,
                             weight_decays=tuple(args.weight_decays), heldout_frac=args.heldout_frac,
                             lr=args.lr, seeds=args.seeds)
    label = (f"baseline {args.baseline}" if args.baseline else "random init" if args.random_init
             else f"{info.stage} step {info.step}")
    try:
        print(f"probing {args.encoder} ({label}) on {process_device()}", flush=True)
        result = probe_encoder(encoder, train_cfg, val_cfg, loader=args.loader, train_views=args.train_views,
                               settings=settings, seed=args.seed, knn_k=args.knn_k,
                               attentive_probe=not args.no_attentive)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = result.attentive_result
    lo, hi = result.chance_band
    attentive = "  attentive probe not run (--no-attentive)\n" if a is None else (
        f"  attentive probe top-1 {result.attentive.fmt()} (mean [95% interval], {args.seeds} seeds; "
        f"{a.epochs} epochs, weight decay {a.weight_decay} chosen on held-out {100 * a.heldout_top1:.1f}%; "
        f"train top-1 {100 * float(np.mean(a.train_top1)):.1f}%)\n")
    print(f"encoder {args.encoder} ({label}), {result.val_samples} val samples, {result.num_classes} classes, "
          f"chance {100 * result.chance:.1f}% (guessing lands in [{100 * lo:.1f}, {100 * hi:.1f}]):\n"
          f"{attentive}"
          f"  linear probe (BatchNorm + linear, pooled) top-1 {result.linear.fmt()} "
          f"(train top-1 {100 * result.linear_train_top1:.1f}%)\n"
          f"  k-NN (k={args.knn_k}) top-1    {result.knn.fmt()}; on standardised features {result.knn_std.fmt()}")
    default_name = (f"probe_{args.baseline}.json" if args.baseline else "probe_random.json" if args.random_init
                    else "probe.json")
    out = Path(args.json) if args.json else encoder_home(args.encoder) / default_name
    write_json_atomic(out, {"encoder": str(args.encoder), "random_init": args.random_init,
                            "baseline": args.baseline, "stage": info.stage,
                            "step": info.step, **result.to_json(), "args": vars(args)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
