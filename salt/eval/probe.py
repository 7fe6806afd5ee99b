"""`python -m salt.eval.probe`: frozen attentive-probe evaluation of an exported encoder.

The encoder is frozen (eval mode, no grad). Its token features are extracted once: `--train-views`
passes over the labelled training shards with training views (random clip start, random-resized
crop, flip), and the validation shards with evaluation views (evenly spaced clips x crops, centre
crop). The attentive probe (learned query, cross-attention, linear head) trains on the stored
features; validation logits are averaged over each sample's views. Reports top-1 and writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from salt.atomic import write_json_atomic
from salt.data.config import LoaderConfig
from salt.eval.features import FeatureSet, extract_features
from salt.eval.pooler import AttentiveProbe


@dataclass
class ProbeResult:
    top1: float  # validation top-1, views averaged
    train_top1: float
    num_classes: int
    train_examples: int
    val_samples: int
    epochs: int
    seconds: float


def train_probe(train: FeatureSet, val: FeatureSet, num_classes: int, *, epochs: int = 30, batch_size: int = 64,
                lr: float = 1e-3, weight_decay: float = 0.01, heads: int = 4, seed: int = 0) -> ProbeResult:
    """train.tokens (S, V, N, D): each (sample, view) is one training example; val.tokens (S', V', N, D):
    logits averaged over V'."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = train.tokens.flatten(0, 1)  # (S * V, N, D)
    y = train.labels.repeat_interleave(train.tokens.shape[1])  # (S * V,)
    probe = AttentiveProbe(train.dim, num_classes, num_heads=heads)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    probe.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(probe(x[idx].float()), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return ProbeResult(top1=evaluate(probe, val), train_top1=evaluate(probe, FeatureSet(x.unsqueeze(1), y)),
                       num_classes=num_classes, train_examples=len(x), val_samples=len(val.labels), epochs=epochs,
                       seconds=time.perf_counter() - t0)


@torch.no_grad()
def evaluate(probe: nn.Module, data: FeatureSet, batch_size: int = 256) -> float:
    probe.eval()
    correct = 0
    for i in range(0, len(data.labels), batch_size):
        t = data.tokens[i:i + batch_size].float()  # (b, V, N, D)
        logits = probe(t.flatten(0, 1)).unflatten(0, t.shape[:2]).softmax(-1).mean(1)  # (b, classes)
        correct += int((logits.argmax(-1) == data.labels[i:i + batch_size]).sum())
    return correct / max(1, len(data.labels))


def loader_configs(shards_train: str, shards_val: str, *, num_frames: int, crop_size: int, frame_stride: int,
                   batch_size: int, eval_clips: int, eval_crops: int, threads: int, seed: int
                   ) -> tuple[LoaderConfig, LoaderConfig]:
    common = dict(num_frames=num_frames, crop_size=crop_size, frame_stride=frame_stride, batch_size=batch_size,
                  threads=threads, seed=seed)
    return (LoaderConfig(shards=shards_train, mode="train", **common),
            LoaderConfig(shards=shards_val, mode="eval", eval_clips=eval_clips, eval_crops=eval_crops, **common))


def probe_encoder(encoder: nn.Module, train_cfg: LoaderConfig, val_cfg: LoaderConfig, *, loader: str = "dali",
                  train_views: int = 2, epochs: int = 30, device: torch.device | None = None,
                  seed: int = 0) -> ProbeResult:
    from salt.data.dali_loader import DaliVideoLoader
    from salt.data.reference_loader import ReferenceVideoLoader

    make = DaliVideoLoader if loader == "dali" else ReferenceVideoLoader
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device)
    with make(train_cfg) as train_loader:
        num_classes = train_loader.num_classes
        if num_classes < 2:
            raise ValueError(f"{train_cfg.shards} is not labelled (needs at least 2 classes)")
        passes = [extract_features(encoder, train_loader, 1, device) for _ in range(train_views)]
    train = FeatureSet(torch.cat([p.tokens for p in passes]), torch.cat([p.labels for p in passes]))
    with make(val_cfg) as val_loader:
        if val_loader.shards.classes != train_loader.shards.classes:
            raise ValueError(f"train and val shard sets have different classes: {train_loader.shards.classes} vs "
                             f"{val_loader.shards.classes}")
        val = extract_features(encoder, val_loader, val_cfg.views_per_sample, device)
    return train_probe(train, val, num_classes, epochs=epochs, seed=seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m salt.eval.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", required=True, help="run folder, export folder or encoder.safetensors")
    ap.add_argument("--random-init", action="store_true",
                    help="same architecture as --encoder, randomly initialised weights (the floor)")
    ap.add_argument("--train", required=True, help="labelled training shard set")
    ap.add_argument("--val", required=True, help="labelled validation shard set")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train-views", type=int, default=2, help="passes over --train with fresh random views")
    ap.add_argument("--eval-clips", type=int, default=2, help="evenly spaced clips per validation sample")
    ap.add_argument("--eval-crops", type=int, default=3, help="crops along the long side per clip")
    ap.add_argument("--batch-size", type=int, default=16, help="clips per loader batch")
    ap.add_argument("--loader", choices=("dali", "reference"), default="dali")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the result here (default: <encoder>/probe.json)")
    args = ap.parse_args(argv)

    from salt.engine.export import find_encoder, load_encoder
    from salt.models import build_encoder

    try:
        encoder, info = load_encoder(args.encoder)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.random_init:
        torch.manual_seed(args.seed)
        encoder = build_encoder(info.size, img_size=info.img_size, num_frames=info.num_frames,
                                patch_size=info.patch_size, tubelet_size=info.tubelet_size, depth=info.depth,
                                use_rope=info.use_rope)
    train_cfg, val_cfg = loader_configs(args.train, args.val, num_frames=info.num_frames, crop_size=info.img_size,
                                        frame_stride=info.frame_stride, batch_size=args.batch_size,
                                        eval_clips=args.eval_clips, eval_crops=args.eval_crops,
                                        threads=args.threads, seed=args.seed)
    result = probe_encoder(encoder, train_cfg, val_cfg, loader=args.loader, train_views=args.train_views,
                           epochs=args.epochs, seed=args.seed)
    label = "random init" if args.random_init else f"{info.stage} step {info.step}"
    print(f"attentive probe: top-1 {100 * result.top1:.1f}% on {result.val_samples} val samples "
          f"({result.num_classes} classes, chance {100 / result.num_classes:.1f}%); train top-1 "
          f"{100 * result.train_top1:.1f}%; encoder {args.encoder} ({label})")
    out = Path(args.json) if args.json else find_encoder(args.encoder).parent / (
        "probe_random.json" if args.random_init else "probe.json")
    write_json_atomic(out, {"encoder": str(args.encoder), "random_init": args.random_init, "stage": info.stage,
                            "step": info.step, **vars(result), "args": vars(args)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
