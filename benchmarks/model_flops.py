"""Parameters and training-step FLOPs per clip for every encoder size and objective (analytic, salt.flops),
at a clip geometry and the default multiblock masks, checked against FlopCounterMode on small sizes.

    python benchmarks/model_flops.py [--json benchmarks/results/model_flops.json]

Mask token counts come from drawing the default multiblock masks (short-range 8x0.15 and long-range
2x0.7; every mask runs the encoder once) in batches of --mask-batch, since V-JEPA's masks truncate every
sample to the batch's shortest index list. FLOPs are averaged over the draws. The teacher and the
student are the same size unless --teacher-size is given; the pixel decoder and predictor are the
defaults (384 wide; 4 and 12 deep). The counter check builds the models on the meta device, so it
costs no compute.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import format_table, write_result
from salt.flops import (
    StepFlops,
    encoder_forward_flops,
    mask_counts,
    student_step_flops,
    teacher_step_flops,
    vjepa_step_flops,
)
from salt.masks import DEFAULT_MULTIBLOCK, MaskBatch, TokenGrid, build_mask_generator
from salt.models import (
    DEFAULT_PIXEL_DECODER,
    DEFAULT_PREDICTOR,
    ENCODER_SIZES,
    build_encoder,
    build_pixel_decoder,
    build_predictor,
)
from salt.objectives import StudentObjective, TeacherObjective, VJEPAObjective

G = 1e9


def draw_masks(grid: TokenGrid, draws: int, batch: int, seed: int) -> list[list[MaskBatch]]:
    gen = build_mask_generator("multiblock", grid=grid)
    g = torch.Generator().manual_seed(seed)
    return [gen(batch, g) for _ in range(draws)]


def mean_flops(fn, drawn: list[list[MaskBatch]]) -> StepFlops:  # noqa: ANN001
    total = StepFlops(0.0, 0.0)
    for masks in drawn:
        f = fn(mask_counts(masks))
        total = StepFlops(total.trained_forward + f.trained_forward, total.frozen_forward + f.frozen_forward,
                          total.no_input_grad + f.no_input_grad)
    return total.scaled(1.0 / len(drawn))


def size_row(size: str, teacher_size: str, a: argparse.Namespace, grid: TokenGrid,
             drawn: list[list[MaskBatch]]) -> dict:
    spec, tspec = ENCODER_SIZES[size], ENCODER_SIZES[teacher_size]
    with torch.device("meta"):
        enc = build_encoder(size, img_size=a.size, num_frames=a.frames, patch_size=a.patch, tubelet_size=a.tubelet)
    params = sum(p.numel() for p in enc.parameters())
    patch_dim = enc.patch_embed.patch_dim
    n = grid.num_tokens
    kw = {"n_tokens": n, "patch_dim": patch_dim}
    teacher = mean_flops(lambda c: teacher_step_flops(spec, DEFAULT_PIXEL_DECODER, masks=c, **kw), drawn)
    student = mean_flops(lambda c: student_step_flops(spec, DEFAULT_PREDICTOR, tspec, target_dim=tspec.embed_dim,
                                                      masks=c, **kw), drawn)
    cached = mean_flops(lambda c: student_step_flops(spec, DEFAULT_PREDICTOR, None, target_dim=tspec.embed_dim,
                                                     masks=c, **kw), drawn)
    vjepa = mean_flops(lambda c: vjepa_step_flops(spec, DEFAULT_PREDICTOR, masks=c, **kw), drawn)
    return {
        "size": size, "width": spec.embed_dim, "depth": spec.depth, "heads": spec.num_heads,
        "params_M": params / 1e6,
        "enc_fwd_full_GF": encoder_forward_flops(spec, n_tokens=n, n_keep=n, patch_dim=patch_dim) / G,
        "teacher_step_GF": teacher.train_step / G,
        "student_step_GF": student.train_step / G,
        "student_cached_GF": cached.train_step / G,
        "vjepa_step_GF": vjepa.train_step / G,
        "teacher_size": teacher_size,
        "student_frozen_fwd_GF": student.frozen_forward / G,
    }


def counter_check(size: str, a: argparse.Namespace, grid: TokenGrid, masks: list[MaskBatch]) -> list[dict]:
    """Analytic vs FlopCounterMode (meta device) for one batch of masks, per clip."""
    batch = masks[0].batch_size
    with torch.device("meta"):
        def enc():  # noqa: ANN202
            return build_encoder(size, img_size=a.size, num_frames=a.frames, patch_size=a.patch,
                                 tubelet_size=a.tubelet)
        e = enc()
        objectives = {
            "teacher": TeacherObjective(e, build_pixel_decoder(grid=grid, in_dim=e.embed_dim, patch_size=a.patch,
                                                               tubelet_size=a.tubelet)),
            "student": StudentObjective(enc(), build_predictor(grid=grid, in_dim=e.embed_dim, out_dim=e.embed_dim),
                                        enc()),
            "vjepa": VJEPAObjective(enc(), build_predictor(grid=grid, in_dim=e.embed_dim, out_dim=e.embed_dim)),
        }
        clips = torch.empty(batch, 3, a.frames, a.size, a.size)
    meta_masks = [m.to("meta") for m in masks]
    rows = []
    for name, obj in objectives.items():
        with FlopCounterMode(display=False) as fwd:
            out = obj(clips, meta_masks)
        with FlopCounterMode(display=False) as bwd:
            out.loss.backward()
        counted_fwd = fwd.get_total_flops() / batch
        counted_step = counted_fwd + bwd.get_total_flops() / batch
        ana = obj.step_flops(masks)
        rows.append({"size": size, "objective": name, "analytic_fwd_GF": ana.forward / G,
                     "counted_fwd_GF": counted_fwd / G, "analytic_step_GF": ana.train_step / G,
                     "counted_step_GF": counted_step / G, "step_ratio": counted_step / ana.train_step})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--tubelet", type=int, default=2)
    p.add_argument("--mask-draws", type=int, default=200)
    p.add_argument("--mask-batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-size", choices=list(ENCODER_SIZES), default=None,
                   help="frozen teacher size for the student columns (default: same as the student)")
    p.add_argument("--check-sizes", default="tiny,small", help="comma list checked with FlopCounterMode")
    p.add_argument("--json", default=None, help="default benchmarks/results/model_flops.json")
    a = p.parse_args(argv)

    grid = TokenGrid.from_clip(num_frames=a.frames, img_size=a.size, patch_size=a.patch, tubelet_size=a.tubelet)
    drawn = draw_masks(grid, a.mask_draws, a.mask_batch, a.seed)
    ctx_frac = [sum(m[i].context_idx.shape[1] for m in drawn) / len(drawn) / grid.num_tokens
                for i in range(len(DEFAULT_MULTIBLOCK))]
    pred_frac = [sum(m[i].pred_idx.shape[1] for m in drawn) / len(drawn) / grid.num_tokens
                 for i in range(len(DEFAULT_MULTIBLOCK))]
    rows = [size_row(s, a.teacher_size or s, a, grid, drawn) for s in ENCODER_SIZES]
    check = [r for s in a.check_sizes.split(",") if s for r in counter_check(s, a, grid, drawn[0])]

    print(f"clip {a.frames}x{a.size}x{a.size}, patch {a.patch}, tubelet {a.tubelet}: {grid.num_tokens} tokens; "
          f"multiblock masks (batch {a.mask_batch}, {a.mask_draws} draws): mean context fraction "
          f"{', '.join(f'{c:.3f}' for c in ctx_frac)}, predicted {', '.join(f'{q:.3f}' for q in pred_frac)}")
    print("GFLOPs per clip per training step (fwd + bwd of trained parts, fwd of a frozen teacher / EMA target)")
    cols = ["size", "width", "depth", "heads", "params_M", "enc_fwd_full_GF", "teacher_step_GF",
            "student_step_GF", "student_cached_GF", "vjepa_step_GF"]
    print(format_table(rows, cols))
    print("\nFlopCounterMode check (meta device, one mask batch)")
    print(format_table(check, ["size", "objective", "analytic_fwd_GF", "counted_fwd_GF", "analytic_step_GF",
                               "counted_step_GF", "step_ratio"]))
    config = {**vars(a), "tokens": grid.num_tokens, "mask_ctx_frac_mean": ctx_frac, "mask_pred_frac_mean": pred_frac,
              "pixel_decoder": vars(DEFAULT_PIXEL_DECODER), "predictor": vars(DEFAULT_PREDICTOR)}
    path = write_result(a.json, "model_flops", config, rows, extra={"flop_counter_check": check})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
