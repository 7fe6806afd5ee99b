"""Attentive probe: learns planted label signal, stays at chance without signal, runs on real loaders."""

from __future__ import annotations

import torch

from salt.eval.features import FeatureSet
from salt.eval.probe import loader_configs, probe_encoder, train_probe
from salt.models import build_encoder


def planted(samples: int, views: int, classes: int, signal: float, seed: int) -> FeatureSet:
    """Tokens of noise; with signal > 0 every token also carries the label as a one-hot pattern."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % classes
    tokens = torch.randn(samples, views, 16, 32, generator=g)
    tokens[..., :classes] += signal * torch.nn.functional.one_hot(labels, classes)[:, None, None, :].float()
    return FeatureSet(tokens.half(), labels)


def test_probe_finds_a_planted_label():
    result = train_probe(planted(200, 2, 8, 1.0, 0), planted(80, 3, 8, 1.0, 1), 8, epochs=15)
    assert result.top1 >= 0.95 and result.train_top1 >= 0.95


def test_probe_on_constant_features_is_at_chance():
    const = FeatureSet(torch.zeros(200, 2, 16, 32).half(), torch.arange(200) % 8)
    val = FeatureSet(torch.zeros(80, 3, 16, 32).half(), torch.arange(80) % 8)
    result = train_probe(const, val, 8, epochs=5)
    assert result.top1 <= 0.2  # one class of eight at best: 10/80


def test_probe_end_to_end_on_shards(synth_shards):
    torch.manual_seed(0)
    encoder = build_encoder("tiny", img_size=32, num_frames=8, patch_size=8, depth=1)
    train_cfg, val_cfg = loader_configs(str(synth_shards), str(synth_shards), num_frames=8, crop_size=32,
                                        frame_stride=4, batch_size=4, eval_clips=2, eval_crops=2, threads=2, seed=0)
    result = probe_encoder(encoder, train_cfg, val_cfg, train_views=1, epochs=2, device=torch.device("cpu"))
    assert result.num_classes == 10
    assert result.val_samples == 30  # every validation sample, the padded last batch excluded
    assert result.train_examples == 28  # one pass of 7 full training batches of 4
    assert 0.0 <= result.top1 <= 1.0
