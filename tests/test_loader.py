"""DALI and reference loaders: batch contents, determinism, ranks, resume, bad samples, agreement."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import zero_sample_video

from dataprep.shard_job import JobConfig, run_job
from salt.data.augment import PixelNorm
from salt.data.config import LoaderConfig
from salt.data.dali_loader import DaliVideoLoader, check_codec
from salt.data.plan import CorruptSampleError, LoaderError, plan_sample
from salt.data.reference_loader import ReferenceVideoLoader
from salt.data.shardset import ShardSet, ShardSetError
from salt.masks import TokenGrid, build_mask_generator

LOADERS = {"dali": DaliVideoLoader, "reference": ReferenceVideoLoader}


def config(shards: Path, **kw) -> LoaderConfig:
    base = dict(shards=str(shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32, seed=5, threads=2)
    return LoaderConfig(**{**base, **kw})


def masks_for(cfg: LoaderConfig):
    return build_mask_generator("multiblock", grid=TokenGrid.from_clip(num_frames=cfg.num_frames,
                                                                       img_size=cfg.crop_size, patch_size=8,
                                                                       tubelet_size=2))


def epoch(loader) -> list:
    return list(loader)


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_batch_contents(kind, synth_shards):
    cfg = config(synth_shards, views_per_clip=2)
    shards = ShardSet(synth_shards)
    labels_by_key = {shards.keys[i]: shards.meta(i)["label_index"] for i in range(len(shards))}
    with LOADERS[kind](cfg, mask_generator=masks_for(cfg)) as loader:
        batches = epoch(loader)
    assert len(batches) == len(loader) == 30 // 4
    seen, relabelled = [], 0
    for b in batches:
        assert b.video.shape == (8, 8, 32, 32, 3) and b.video.dtype == torch.uint8
        x = b.model_input("cpu")
        assert x.shape == (8, 3, 8, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
        # ImageNet normalisation of [0, 255] pixels bounds values to about [-2.2, 2.7]
        assert x.min() >= -2.2 and x.max() <= 2.7 and x.std() > 0.2
        # a flipped view of a left/right class carries the mirrored class (manifest.json label_hflip)
        want = []
        for k, v in zip(b.keys, b.view_ids.tolist(), strict=True):
            index = shards.keys.index(k)
            view = next(p for i, p in plan_sample(shards, index, cfg, b.epoch).views if i == v)
            label = labels_by_key[k]
            want.append(shards.label_hflip[label] if view.flip else label)
        assert b.labels.tolist() == want
        relabelled += sum(w != labels_by_key[k] for w, k in zip(want, b.keys, strict=True))
        assert b.keys[:4] == b.keys[4:]  # two views per clip, view-major
        assert b.view_ids.tolist() == [0] * 4 + [1] * 4
        assert [m.context_idx.shape[0] for m in b.masks] == [8, 8]
        seen += b.keys[:4]
    assert len(set(seen)) == len(seen) == 28
    assert relabelled > 0


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_same_seed_same_batches_other_seed_other_order(kind, synth_shards):
    cfg = config(synth_shards)
    a, b = epoch(LOADERS[kind](cfg, mask_generator=masks_for(cfg))), epoch(LOADERS[kind](cfg, mask_generator=masks_for(cfg)))
    for x, y in zip(a, b, strict=True):
        assert x.keys == y.keys
        assert torch.equal(x.video, y.video)
        assert all(torch.equal(m.context_idx, n.context_idx) for m, n in zip(x.masks, y.masks, strict=True))
    c = epoch(LOADERS[kind](replace(cfg, seed=6)))
    assert [x.keys for x in a] != [x.keys for x in c]


def test_epochs_differ_and_cover_the_data(synth_shards):
    loader = DaliVideoLoader(config(synth_shards))
    e0 = [k for b in epoch(loader) for k in b.keys]
    e1 = [k for b in epoch(loader) for k in b.keys]
    assert e0 != e1 and len(set(e0)) == len(e0) == 28
    assert loader.epoch == 2


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_ranks_get_equal_batch_counts_and_disjoint_samples(kind, synth_shards):
    # 30 samples in shards of 7, 7, 7, 7, 2; batch 4 on 2 ranks: 15 samples each, 3 batches each
    cfg = config(synth_shards, batch_size=4)
    r0 = epoch(LOADERS[kind](cfg, rank=0, world=2))
    r1 = epoch(LOADERS[kind](cfg, rank=1, world=2))
    assert len(r0) == len(r1) == 3
    k0, k1 = {k for b in r0 for k in b.keys}, {k for b in r1 for k in b.keys}
    assert not k0 & k1
    with pytest.raises(LoaderError, match="cannot fill one batch"):
        DaliVideoLoader(config(synth_shards, batch_size=8), rank=0, world=4)


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_resume_round_trip(kind, synth_shards):
    cfg = config(synth_shards)
    full = LOADERS[kind](cfg, mask_generator=masks_for(cfg))
    ref = epoch(full) + epoch(full)  # two epochs uninterrupted
    first = LOADERS[kind](cfg, mask_generator=masks_for(cfg))
    it = iter(first)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))  # it must survive a checkpoint's serialisation
    assert state["epoch"] == 0 and state["batch"] == 3 and state["samples_consumed"] == 12
    resumed = LOADERS[kind](cfg, mask_generator=masks_for(cfg))
    resumed.load_state_dict(state)
    rest = epoch(resumed) + epoch(resumed)
    assert [(b.epoch, b.index) for b in rest] == [(b.epoch, b.index) for b in ref[3:]]
    for x, y in zip(rest, ref[3:], strict=True):
        assert x.keys == y.keys and torch.equal(x.video, y.video)
        assert all(torch.equal(m.pred_idx, n.pred_idx) for m, n in zip(x.masks, y.masks, strict=True))


@pytest.fixture
def corrupt_shards(synth_shards, tmp_path) -> tuple[Path, str]:
    """A copy of the shard set with one sample's video bytes overwritten (the tar stays valid)."""
    out = tmp_path / "corrupt"
    shutil.copytree(synth_shards, out)
    key, _ = zero_sample_video(out, 9)
    return out, key


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_corrupt_sample_is_skipped_and_counted(kind, corrupt_shards):
    path, bad_key = corrupt_shards
    loader = LOADERS[kind](config(path, shuffle_buffer=1))
    batches = epoch(loader)
    assert len(batches) == 7
    keys = [k for b in batches for k in b.keys]
    assert bad_key not in keys and len(keys) == 28
    assert loader.stats.bad_samples == 1 and loader.stats.bad_keys == [bad_key]
    assert loader.state_dict()["bad_keys"] == [bad_key]


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_corrupt_sample_raises_under_strict(kind, corrupt_shards):
    path, bad_key = corrupt_shards
    with pytest.raises(CorruptSampleError, match=rf"sample {bad_key} in shard synth-00000\d\.tar failed to decode"):
        epoch(LOADERS[kind](config(path, strict=True)))


@pytest.mark.parametrize("handoff", ["uint8", "float32"])
def test_dali_and_reference_agree_under_a_fixed_recipe(synth_shards, handoff):
    cfg = config(synth_shards, views_per_clip=2, crop_size=24, handoff=handoff)
    for a, b in zip(epoch(DaliVideoLoader(cfg)), epoch(ReferenceVideoLoader(cfg)), strict=True):
        assert a.keys == b.keys and torch.equal(a.view_ids, b.view_ids)
        assert a.video.dtype == b.video.dtype == (torch.uint8 if handoff == "uint8" else torch.float32)
        x, y = a.model_input("cpu"), b.model_input("cpu")
        diff = (x - y).abs()
        # same frames, crop and flip; only YUV->RGB rounding and (float32: DALI's) resampling differ
        assert diff.mean() < 0.06
        corr = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
        assert corr > 0.995


def test_views_cut_by_dali_and_by_torch_agree(synth_shards):
    """The uint8 views a GPU loader cuts inside DALI (here on the CPU) and the ones torch cuts: same frames,
    boxes and flips; only the resampling kernels differ."""
    cfg = config(synth_shards, views_per_clip=2, crop_size=24)
    for a, b in zip(epoch(DaliVideoLoader(replace(cfg, cut_views="dali"))),
                    epoch(DaliVideoLoader(replace(cfg, cut_views="torch"))), strict=True):
        assert a.keys == b.keys and a.video.shape == b.video.shape == (8, 8, 24, 24, 3)
        assert a.video.dtype == b.video.dtype == torch.uint8
        x, y = a.model_input("cpu"), b.model_input("cpu")
        assert (x - y).abs().mean() < 0.06
        assert torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1] > 0.995


def test_torch_cut_views_need_the_cpu_and_uint8():
    with pytest.raises(ValueError, match="data.cut_views=torch needs data.device=cpu and data.handoff=uint8"):
        LoaderConfig(shards="x", cut_views="torch", handoff="float32").validate()
    with pytest.raises(ValueError, match="data.cut_views must be auto, dali or torch"):
        LoaderConfig(shards="x", cut_views="gpu").validate()


def test_handoffs_give_the_same_model_input(synth_shards):
    """uint8 pixels normalised on the device are the float32 hand-off's values (same cut, same formula)."""
    cfg = config(synth_shards, views_per_clip=2)
    u8 = next(iter(ReferenceVideoLoader(cfg)))
    f32 = next(iter(ReferenceVideoLoader(replace(cfg, handoff="float32"))))
    assert u8.norm is not None and f32.norm is None
    assert torch.allclose(u8.model_input("cpu"), f32.model_input("cpu"), atol=1e-5)
    assert torch.allclose(u8.model_input("cpu", torch.bfloat16).float(), f32.video, atol=2e-2)


def test_pixel_norm_refuses_float_input():
    with pytest.raises(TypeError, match=r"expects \(N, T, H, W, 3\) uint8 pixels, got \(1, 3, 1, 2, 2\) torch.float32"):
        PixelNorm((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))(torch.zeros(1, 3, 1, 2, 2))


def test_pixel_norm_values_and_layout():
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 1, 3).expand(2, 4, 5, 6, 3).contiguous()
    x = PixelNorm((0.5, 0.2, 0.0), (0.5, 0.2, 1.0))(pixels)  # (N, T, H, W, C) -> (N, C, T, H, W)
    assert x.shape == (2, 3, 4, 5, 6) and x.is_contiguous()
    assert torch.allclose(x[:, 0], torch.tensor(-1.0)) and torch.allclose(x[:, 1], torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(x[:, 2], torch.tensor(1.0))


def test_view_recipe_changes_the_pixels(synth_shards):
    a = next(iter(DaliVideoLoader(config(synth_shards))))
    b = next(iter(DaliVideoLoader(config(synth_shards, scale=(0.9, 1.0)))))
    assert a.keys == b.keys and not torch.allclose(a.video, b.video)


def test_eval_mode_fixed_views(synth_shards):
    cfg = config(synth_shards, mode="eval", eval_clips=2, eval_crops=3, frame_stride=1)
    loader = DaliVideoLoader(cfg)
    e0, e1 = epoch(loader), epoch(loader)
    assert e0[0].video.shape[0] == 4 * 6
    assert [b.keys for b in e0] == [b.keys for b in e1]
    firsts = [k for b in e0 for k in b.keys[:4]]
    assert firsts == sorted(firsts)  # stored order
    assert all(torch.equal(x.video, y.video) for x, y in zip(e0, e1, strict=True))
    assert e0[0].view_ids.tolist() == [v for v in range(6) for _ in range(4)]
    # evaluation covers every sample exactly once; the last batch is padded and says how much is real
    assert len(e0) == 8 and [b.valid for b in e0] == [4] * 7 + [2]
    real = [k for b in e0 for k in b.keys[:b.valid]]
    assert len(real) == len(set(real)) == 30


def test_codec_the_device_cannot_decode_is_refused_up_front(synth_videos, tmp_path):
    out = tmp_path / "h264"
    files = sorted(synth_videos.rglob("*.mp4"))[:8]
    lst = tmp_path / "list.jsonl"
    lst.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in files))
    run_job(JobConfig(input=str(lst), name="h264", short_side=32, codec="h264"), out, progress=False)
    with pytest.raises(LoaderError, match="decodes only on a GPU.*reference loader"):
        DaliVideoLoader(config(out, device="cpu"))
    with pytest.raises(LoaderError, match="decodes only with NVDEC; data.gpu_decode=false decodes on the CPU"):
        check_codec(ShardSet(out), "gpu", gpu_decode=False)
    check_codec(ShardSet(out), "gpu", gpu_decode=True)
    batches = epoch(ReferenceVideoLoader(config(out)))  # the reference loader reads H.264 on the CPU
    assert len(batches) == 2 and batches[0].model_input("cpu").shape == (4, 3, 8, 32, 32)


def test_missing_or_empty_shard_set_is_a_clear_error(tmp_path):
    with pytest.raises(ShardSetError, match="manifest.json is missing"):
        ShardSet(tmp_path)


def test_masks_differ_between_batches(synth_shards):
    cfg = config(synth_shards)
    batches = epoch(DaliVideoLoader(cfg, mask_generator=masks_for(cfg)))
    firsts = [b.masks[0].pred_idx for b in batches]
    assert any(not torch.equal(firsts[0], f) for f in firsts[1:]) or \
        any(f.shape != firsts[0].shape for f in firsts[1:])
    assert np.all([m.context_idx.shape[0] == 4 for b in batches for m in b.masks])


def test_cut_view_crops_resizes_and_flips():
    from salt.data.augment import cut_view
    from salt.data.views import ViewParams

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 40, 50, 3), dtype=torch.uint8, generator=g)  # (T, H, W, 3)
    plain, flipped = torch.empty(3, 16, 16, 3, dtype=torch.uint8), torch.empty(3, 16, 16, 3, dtype=torch.uint8)
    cut_view(frames, ViewParams(0, 5, 10, 32, 32, False), 16, plain)
    cut_view(frames, ViewParams(0, 5, 10, 32, 32, True), 16, flipped)
    assert torch.equal(flipped, plain.flip(2))
    # the uint8 kernel matches float resampling of the same box to within rounding
    box = frames[:, 5:37, 10:42].permute(0, 3, 1, 2).float()
    want = torch.nn.functional.interpolate(box, size=(16, 16), mode="bilinear", antialias=True).permute(0, 2, 3, 1)
    assert (plain.float() - want).abs().max() <= 1.0
