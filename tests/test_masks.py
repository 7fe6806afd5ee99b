"""Mask generators: invariants, determinism, V-JEPA multiblock semantics, tube/random ratios, the CLI."""

from __future__ import annotations

import pickle

import pytest
import torch

from salt.masks import (
    DEFAULT_MULTIBLOCK,
    BlockSpec,
    MaskBatch,
    MultiBlockMaskGenerator,
    TokenGrid,
    build_mask_generator,
    gather_tokens,
)
from salt.masks.__main__ import main as masks_cli
from salt.masks.multiblock import sample_block_size

GRID = TokenGrid.from_clip(num_frames=16, img_size=224, patch_size=16, tubelet_size=2)  # 8 x 14 x 14
SMALL = TokenGrid(2, 6, 5)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_invariants(m: MaskBatch, n_tokens: int) -> None:
    ctx, pred = m.context_idx, m.pred_idx
    assert ctx.dtype == pred.dtype == torch.long
    assert ctx.shape[0] == pred.shape[0] and ctx.shape[1] > 0 and pred.shape[1] > 0
    assert int(ctx.min()) >= 0 and int(pred.min()) >= 0
    assert int(ctx.max()) < n_tokens and int(pred.max()) < n_tokens
    for c, p in zip(ctx.tolist(), pred.tolist(), strict=True):
        assert c == sorted(set(c)) and p == sorted(set(p))  # sorted, no repeats
        assert not set(c) & set(p)  # disjoint


@pytest.mark.parametrize("kind", ["multiblock", "tube", "random"])
@pytest.mark.parametrize("grid", [GRID, SMALL], ids=["default", "small"])
def test_invariants_and_determinism(kind: str, grid: TokenGrid) -> None:
    g = build_mask_generator(kind, grid=grid)
    a = g(6, gen(0))
    assert len(a) == (2 if kind == "multiblock" else 1)
    for m in a:
        check_invariants(m, grid.num_tokens)
    b = g(6, gen(0))
    c = g(6, gen(1))
    assert all(torch.equal(x.context_idx, y.context_idx) and torch.equal(x.pred_idx, y.pred_idx)
               for x, y in zip(a, b, strict=True))
    assert any(x.context_idx.shape != y.context_idx.shape or not torch.equal(x.context_idx, y.context_idx)
               for x, y in zip(a, c, strict=True))


def test_global_rng_untouched_and_picklable() -> None:
    g = build_mask_generator("multiblock", grid=GRID)
    state = torch.get_rng_state()
    g(4, gen(3))
    assert torch.equal(state, torch.get_rng_state())
    clone = pickle.loads(pickle.dumps(g))
    assert torch.equal(clone(4, gen(3))[1].context_idx, g(4, gen(3))[1].context_idx)


def test_default_multiblock_is_vjepa_config() -> None:
    short, long = DEFAULT_MULTIBLOCK
    assert (short.num_blocks, short.spatial_scale, long.num_blocks, long.spatial_scale) == (8, (0.15, 0.15), 2, (0.7, 0.7))
    for b in DEFAULT_MULTIBLOCK:
        assert b.temporal_scale == (1.0, 1.0) and b.aspect_ratio == (0.75, 1.5)


@pytest.mark.parametrize("scale", [0.15, 0.7])
def test_block_size_follows_scales(scale: float) -> None:
    spec = BlockSpec(num_blocks=1, spatial_scale=(scale, scale))
    for seed in range(50):
        t, h, w = sample_block_size(GRID, spec, gen(seed))
        assert t == GRID.frames  # temporal scale 1.0: the block spans the whole clip
        assert 0.75 - 0.35 <= h / w <= 1.5 + 0.35  # aspect ratio 0.75-1.5, up to rounding h and w
        assert abs(h * w / GRID.spatial_tokens - scale) < 0.2 * scale


@pytest.mark.parametrize("spec", DEFAULT_MULTIBLOCK, ids=["short", "long"])
def test_multiblock_fractions_within_scales(spec: BlockSpec) -> None:
    g = MultiBlockMaskGenerator(GRID, [spec])
    for seed in range(30):
        (m,) = g(1, gen(seed))  # batch of one: no truncation
        n_ctx, n_pred = m.context_idx.shape[1], m.pred_idx.shape[1]
        assert n_ctx + n_pred == GRID.num_tokens  # context = complement of the union of blocks
        t, h, w = sample_block_size(GRID, spec, gen(seed))  # the same first draws as the generator's
        assert t * h * w <= n_pred <= min(spec.num_blocks * t * h * w, GRID.num_tokens - 1)
        pred_frac = n_pred / GRID.num_tokens
        assert 0.8 * spec.spatial_scale[0] <= pred_frac <= min(1.0, 1.2 * spec.num_blocks * spec.spatial_scale[1])


def test_multiblock_block_size_per_batch_positions_per_sample() -> None:
    g = MultiBlockMaskGenerator(GRID, [BlockSpec(num_blocks=1, spatial_scale=(0.1, 0.4))])
    (m,) = g(8, gen(5))
    # One block per sample, same size for the whole batch: equal lengths without any truncation.
    assert m.pred_idx.shape[1] + m.context_idx.shape[1] == GRID.num_tokens
    assert len({tuple(p) for p in m.pred_idx.tolist()}) > 1  # positions differ between samples


def test_multiblock_truncates_to_shortest_in_batch() -> None:
    short = MultiBlockMaskGenerator(GRID, [DEFAULT_MULTIBLOCK[0]])
    singles = [short(1, gen(s))[0] for s in range(4)]
    (batched,) = short(4, gen(0))
    check_invariants(batched, GRID.num_tokens)
    # Per-sample union sizes vary, so the batch is cut to the shortest lists (< N in total).
    assert batched.context_idx.shape[1] + batched.pred_idx.shape[1] < GRID.num_tokens
    assert len({s.context_idx.shape[1] for s in singles}) > 1


def test_whole_grid_block_is_rejected() -> None:
    g = MultiBlockMaskGenerator(TokenGrid(1, 2, 2), [BlockSpec(num_blocks=1, spatial_scale=(1.0, 1.0),
                                                               aspect_ratio=(1.0, 1.0))])
    with pytest.raises(ValueError, match="no context"):
        g(2, gen(0))
    with pytest.raises(ValueError):
        BlockSpec(num_blocks=1, spatial_scale=(0.0, 0.5))


def test_tube_masks_same_positions_in_every_frame() -> None:
    (m,) = build_mask_generator("tube", grid=GRID, mask_ratio=0.9)(3, gen(0))
    per_frame = int(0.9 * GRID.spatial_tokens)
    assert m.pred_idx.shape[1] == GRID.frames * per_frame
    assert m.context_idx.shape[1] == GRID.num_tokens - m.pred_idx.shape[1]
    spatial = (m.context_idx % GRID.spatial_tokens).view(3, GRID.frames, -1)  # (B, T', kept)
    assert torch.equal(spatial, spatial[:, :1].expand_as(spatial))
    frames = (m.context_idx // GRID.spatial_tokens).view(3, GRID.frames, -1)
    assert torch.equal(frames, torch.arange(GRID.frames).view(1, -1, 1).expand_as(frames))


def test_random_masks_ratio_and_uniformity() -> None:
    (m,) = build_mask_generator("random", grid=GRID, mask_ratio=0.75)(64, gen(0))
    assert m.pred_idx.shape[1] == int(0.75 * GRID.num_tokens)
    counts = torch.bincount(m.context_idx.flatten(), minlength=GRID.num_tokens).float()
    assert 0.15 < counts.mean() / 64 < 0.35 and counts.std() / counts.mean() < 0.5  # spread over the grid
    with pytest.raises(ValueError):
        build_mask_generator("random", grid=GRID, mask_ratio=1.0)
    with pytest.raises(ValueError, match="unknown mask kind"):
        build_mask_generator("checkerboard", grid=GRID)


def test_gather_tokens_matches_indexing() -> None:
    x = torch.randn(3, 10, 4)
    idx = torch.tensor([[0, 9], [3, 3], [5, 1]])
    out = gather_tokens(x, idx)
    assert torch.equal(out, torch.stack([x[b, idx[b]] for b in range(3)]))
    with pytest.raises(ValueError):
        gather_tokens(x, idx[:2])


def test_maskbatch_validation_and_move() -> None:
    m = MaskBatch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    assert m.to("cpu").pred_idx.shape == (2, 4) and m.batch_size == 2
    with pytest.raises(ValueError):
        MaskBatch(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))


def test_cli_prints_fractions(capsys: pytest.CaptureFixture[str]) -> None:
    masks_cli(["--frames", "16", "--size", "224", "--patch", "16", "--tubelet", "2", "--kind", "multiblock",
               "--draws", "20", "--seed", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "1568 tokens" in lines[0]
    rows = [line.split()[-6:] for line in lines[2:]]
    assert len(rows) == 2
    for row in rows:
        ctx_mean, ctx_min, ctx_max, pred_mean, pred_min, pred_max = map(float, row)
        assert 0 < ctx_min <= ctx_mean <= ctx_max < 1 and 0 < pred_min <= pred_mean <= pred_max < 1
        assert ctx_mean + pred_mean == pytest.approx(1.0, abs=1e-3)  # batch of one: complement
    masks_cli(["--kind", "tube", "--draws", "2"])
    assert "0.898" in capsys.readouterr().out


def test_full_kind_sees_and_predicts_every_token() -> None:
    g = build_mask_generator("full", grid=SMALL)
    (m,) = g(3, gen(0))
    every = torch.arange(SMALL.num_tokens).expand(3, -1)
    assert m.context_idx.dtype == torch.long
    assert torch.equal(m.context_idx, every) and torch.equal(m.pred_idx, every)
    m.context_idx[0, 0] = 7  # the two index sets are separate tensors
    assert int(m.pred_idx[0, 0]) == 0
    with pytest.raises(ValueError, match="unknown mask kind 'none'.*full"):
        build_mask_generator("none", grid=SMALL)
