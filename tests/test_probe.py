"""Probes: the attentive probe finds a label planted in one token of 256 and stays at chance without
one; k-NN and the intervals behave; held-out selection never sees validation; real loaders run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salt.eval.features import FeatureSet
from salt.eval.intervals import bootstrap, chance_band
from salt.eval.knn import knn_correct
from salt.eval.probe import ProbeSettings, evaluate_features, loader_configs, probe_encoder, train_probe
from salt.models import build_encoder

FAST = ProbeSettings(max_epochs=30, eval_every=10, weight_decays=(0.01,), seeds=2)


def planted(samples: int, views: int, classes: int, signal: float, seed: int, tokens: int = 256,
            dim: int = 32) -> FeatureSet:
    """Noise tokens; with signal > 0, one token per view (at a random position) carries the label: a
    marker shared by every class (as a good encoder marks where an object is) and the label as a
    one-hot pattern, both on top of the token's noise. The label is in 1 of `tokens` tokens."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % classes
    x = torch.randn(samples, views, tokens, dim, generator=g)
    where = torch.randint(0, tokens, (samples, views), generator=g)
    hot = torch.nn.functional.one_hot(labels, dim).float()[:, None, :] * signal  # (S, 1, D)
    hot[..., dim - 6:] += signal  # the marker: last 6 channels
    x[torch.arange(samples)[:, None], torch.arange(views)[None, :], where] += hot
    return FeatureSet(x.half(), labels, [f"s{i}" for i in range(samples)])


@pytest.mark.timeout(300)
def test_probe_finds_a_label_planted_in_one_token_of_256():
    train, val = planted(400, 2, 10, 4.0, 0), planted(300, 2, 10, 4.0, 1)  # 2 training views, as the CLI
    result = evaluate_features(train, val, 10, ProbeSettings(seeds=1))  # the CLI's selection grid
    assert result.attentive.mean >= 0.95, result.to_json()
    assert result.attentive.low > result.chance_band[1]


def test_probe_on_constant_features_is_at_chance():
    const = FeatureSet(torch.zeros(200, 2, 16, 32).half(), torch.arange(200) % 8)
    val = FeatureSet(torch.zeros(80, 3, 16, 32).half(), torch.arange(80) % 8)
    result = evaluate_features(const, val, 8, FAST)
    assert result.attentive.mean <= 0.125 + 1e-6  # every view identical: one class for all, 10 of 80
    assert result.knn.mean <= 0.125 + 1e-6
    assert result.attentive.low <= 0.125 <= result.chance_band[1]


def test_selection_uses_held_out_training_videos_only():
    """Poisoned validation labels change nothing in the chosen epochs and weight decay."""
    train, val = planted(120, 2, 4, 3.0, 0, tokens=16), planted(60, 1, 4, 3.0, 1, tokens=16)
    settings = ProbeSettings(max_epochs=20, eval_every=5, weight_decays=(0.0, 0.3), seeds=1)
    a = train_probe(train, val, 4, settings)
    shuffled = FeatureSet(val.tokens, val.labels.roll(1), val.keys)
    b = train_probe(train, shuffled, 4, settings)
    assert (a.epochs, a.weight_decay, a.heldout_top1) == (b.epochs, b.weight_decay, b.heldout_top1)
    assert {c["epoch"] for c in a.curve} == {5, 10, 15, 20} and {c["weight_decay"] for c in a.curve} == {0.0, 0.3}
    assert a.correct.shape == (1, 60)


def test_probe_seeds_are_reproducible_and_differ():
    train, val = planted(80, 1, 4, 1.0, 0, tokens=8), planted(40, 1, 4, 1.0, 1, tokens=8)
    a = train_probe(train, val, 4, FAST)
    b = train_probe(train, val, 4, FAST)
    assert torch.equal(a.correct, b.correct) and a.train_top1 == b.train_top1
    assert a.correct.shape == (2, 40)


def test_knn_votes_for_the_nearest_class():
    # class c's pooled feature points along axis c; validation rows sit next to their class
    train = FeatureSet(torch.eye(4).repeat(10, 1)[:, None, None, :].expand(40, 1, 3, 4).half(),
                       torch.arange(4).repeat(10))
    val = FeatureSet((torch.eye(4) + 0.1)[[2, 0, 3, 1]][:, None, None, :].expand(4, 2, 3, 4).half(),
                     torch.tensor([2, 0, 3, 1]))
    assert knn_correct(train, val, 4, k=5).all()
    wrong = FeatureSet(val.tokens, torch.tensor([0, 1, 2, 3]))
    assert not knn_correct(train, wrong, 4, k=5).any()


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    small, large = bootstrap(rng.random((3, 100)) < 0.6), bootstrap(rng.random((3, 1000)) < 0.6)
    for e in (small, large):
        assert e.low < e.mean < e.high
    assert (large.high - large.low) < (small.high - small.low)
    assert bootstrap(np.ones((2, 50))).low == 1.0  # no spread, no width


def test_chance_band_matches_the_binomial():
    lo, hi = chance_band(10, 100)
    assert (lo, hi) == (0.05, 0.16)  # P(X <= 4) < 2.5% <= P(X <= 5); likewise at the top
    lo, hi = chance_band(4, 300)
    assert lo < 0.25 < hi and hi - lo < 0.11


def test_probe_end_to_end_on_shards(synth_shards):
    torch.manual_seed(0)
    encoder = build_encoder("tiny", img_size=32, num_frames=8, patch_size=8, depth=1)
    train_cfg, val_cfg = loader_configs(str(synth_shards), str(synth_shards), num_frames=8, crop_size=32,
                                        frame_stride=4, batch_size=4, eval_clips=2, eval_crops=2, threads=2, seed=0)
    result = probe_encoder(encoder, train_cfg, val_cfg, train_views=1, device=torch.device("cpu"),
                           settings=ProbeSettings(max_epochs=2, eval_every=1, weight_decays=(0.01,), seeds=2))
    assert result.num_classes == 10
    assert result.val_samples == 30  # every validation sample, the padded last batch excluded
    assert result.train_examples == 28  # one pass of 7 full training batches of 4
    assert result.attentive_result.correct.shape == (2, 30)
    assert result.attentive.seeds == 2 and result.knn.samples == 30
    assert result.attentive.low <= result.attentive.mean <= result.attentive.high
