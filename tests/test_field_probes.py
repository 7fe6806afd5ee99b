"""The field's probes for frozen features and the encoder-free baselines: MAE's linear probe (BatchNorm
without affine, then linear), k-NN on standardised features, pixels and frame differences, and the
feature diagnostics that show where training loses features."""

from __future__ import annotations

import math

import pytest
import torch

from salt.eval.baselines import PixelBaseline
from salt.eval.diagnostics import feature_diagnostics
from salt.eval.features import FeatureSet
from salt.eval.knn import knn_correct
from salt.eval.linear import LinearSettings, linear_probe_correct
from salt.models import build_encoder


def pooled_set(x: torch.Tensor, labels: torch.Tensor) -> FeatureSet:
    """(S, D) pooled features as a FeatureSet of one view of one token."""
    return FeatureSet(x[:, None, None, :].half(), labels)


def scaled_signal(samples: int, seed: int, scale: float) -> FeatureSet:
    """4 classes along dims 0-3 with unit noise, every dim then multiplied by `scale`; dim 4 is a nuisance
    with 30x the spread of the others."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % 4
    x = torch.randn(samples, 8, generator=g) * 0.5
    x[torch.arange(samples), labels] += 2.0
    x[:, 4] = torch.randn(samples, generator=g) * 30
    return pooled_set(x * scale, labels)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_linear_probe_learns_whatever_the_feature_scale(scale):
    """The BatchNorm in front makes the probe's fit independent of the features' scale."""
    train, val = scaled_signal(400, 0, scale), scaled_signal(200, 1, scale)
    correct, fit = linear_probe_correct(train, val, 4, seeds=2, settings=LinearSettings(epochs=30))
    assert correct.shape == (2, 200)
    assert correct.float().mean() > 0.9 and min(fit) > 0.9


def test_linear_probe_is_reproducible_and_at_chance_on_constant_features():
    train, val = scaled_signal(200, 0, 1.0), scaled_signal(80, 1, 1.0)
    a, _ = linear_probe_correct(train, val, 4, settings=LinearSettings(epochs=5))
    b, _ = linear_probe_correct(train, val, 4, settings=LinearSettings(epochs=5))
    assert torch.equal(a, b)
    const = pooled_set(torch.zeros(200, 8), torch.arange(200) % 4)
    correct, _ = linear_probe_correct(const, pooled_set(torch.zeros(80, 8), torch.arange(80) % 4), 4,
                                      settings=LinearSettings(epochs=5))
    assert correct.float().mean() <= 0.25 + 1e-6


def test_standardised_knn_is_not_ruled_by_high_variance_dimensions():
    """The label lives in 4 dimensions of small spread, 4 others are noise 50x wider: on plain cosine the
    noise decides the neighbours, on z-scored dimensions the label does."""
    def data(samples: int, seed: int) -> FeatureSet:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(samples) % 4
        x = torch.randn(samples, 8, generator=g)  # dims 4-7: noise of std 1
        x[:, :4] = torch.randn(samples, 4, generator=g) * 0.005
        x[torch.arange(samples), labels] += 0.02
        return pooled_set(x, labels)

    train, val = data(400, 0), data(200, 1)
    plain = knn_correct(train, val, 4).float().mean()
    standardised = knn_correct(train, val, 4, standardize=True).float().mean()
    assert plain < 0.4
    assert standardised > 0.6


def test_pixel_baselines_shapes_and_what_they_keep():
    clip = torch.randn(3, 3, 8, 32, 32)  # (B, C, T, H, W)
    pixels, diff = PixelBaseline("pixels")(clip), PixelBaseline("frame-diff")(clip)
    assert pixels.shape == (3, 1, 3 * 8 * 8 * 8) and diff.shape == (3, 1, 3 * 7 * 8 * 8)
    still = clip[:, :, :1].expand(-1, -1, 8, -1, -1)  # a frame held for 8 frames: no motion
    assert PixelBaseline("frame-diff")(still).abs().max() == 0
    assert PixelBaseline("pixels")(still).abs().max() > 0
    with pytest.raises(ValueError, match="unknown baseline"):
        PixelBaseline("optical-flow")


@pytest.mark.parametrize("rope", [False, True])
def test_feature_diagnostics_read_the_encoder(rope):
    torch.manual_seed(0)
    enc = build_encoder("tiny", img_size=32, num_frames=8, patch_size=8, depth=2, use_rope=rope)
    clips = torch.randn(6, 3, 8, 32, 32)
    d = feature_diagnostics(enc, clips)
    n = enc.num_tokens
    for i in range(2):
        assert 0 < d[f"attn_entropy_{i}"] <= math.log(n) + 1e-4
        assert d[f"resid_norm_{i}"] > 0
    assert 1 <= d["rankme"] <= 192 and -1 <= d["token_cosine"] <= 1 and -1 <= d["clip_cosine"] <= 1
    assert d["dim_std_min"] <= d["feature_std"] <= d["dim_std_max"]
    assert enc.training  # put back as found
    same = clips[:1].expand(6, -1, -1, -1, -1)
    assert feature_diagnostics(enc, same)["clip_cosine"] == pytest.approx(1.0, abs=1e-5)  # every clip alike
    flat = torch.ones(2, 3, 8, 32, 32)  # every patch alike: tokens differ only by position
    assert feature_diagnostics(enc, flat)["token_cosine"] > d["token_cosine"]
