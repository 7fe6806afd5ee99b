"""python -m salt.masks: context and predicted fractions of a mask kind over many draws."""

from __future__ import annotations

import argparse

from salt.masks.factory import MASK_KINDS, build_mask_generator
from salt.masks.grid import TokenGrid
from salt.masks.multiblock import DEFAULT_MULTIBLOCK
from salt.masks.stats import mask_stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m salt.masks", description=__doc__)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--tubelet", type=int, default=2)
    p.add_argument("--kind", choices=MASK_KINDS, default="multiblock")
    p.add_argument("--mask-ratio", type=float, default=0.9, help="tube / random only")
    p.add_argument("--draws", type=int, default=1000, help="number of batches drawn")
    p.add_argument("--batch-size", type=int, default=1,
                   help="samples per draw (multiblock truncates every sample to the batch's shortest list)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    grid = TokenGrid.from_clip(num_frames=a.frames, img_size=a.size, patch_size=a.patch, tubelet_size=a.tubelet)
    gen = build_mask_generator(a.kind, grid=grid, mask_ratio=a.mask_ratio)
    names = [f"{b.num_blocks} blocks @ {b.spatial_scale[0]:g}" for b in DEFAULT_MULTIBLOCK] \
        if a.kind == "multiblock" else [f"ratio {a.mask_ratio:g}"]
    print(f"grid {grid.frames}x{grid.height}x{grid.width} = {grid.num_tokens} tokens; kind {a.kind}; "
          f"{a.draws} draws of batch {a.batch_size}; seed {a.seed}")
    print(f"{'mask':<20}{'ctx mean':>10}{'ctx min':>10}{'ctx max':>10}"
          f"{'pred mean':>11}{'pred min':>10}{'pred max':>10}")
    for s, name in zip(mask_stats(gen, num_draws=a.draws, batch_size=a.batch_size, seed=a.seed), names, strict=True):
        print(f"{name:<20}{s.ctx_mean:>10.3f}{s.ctx_min:>10.3f}{s.ctx_max:>10.3f}"
              f"{s.pred_mean:>11.3f}{s.pred_min:>10.3f}{s.pred_max:>10.3f}")


if __name__ == "__main__":
    main()
