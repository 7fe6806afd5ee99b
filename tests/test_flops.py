"""Analytic FLOPs (salt.flops) against torch's FlopCounterMode on the meta device, and published figures."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from salt.flops import (
    StepFlops,
    block_flops,
    encoder_forward_flops,
    linear_flops,
    student_step_flops,
    teacher_step_flops,
)
from salt.masks import MaskBatch, TokenGrid, build_mask_generator
from salt.models import (
    DEFAULT_PIXEL_DECODER,
    DEFAULT_PREDICTOR,
    ENCODER_SIZES,
    build_encoder,
    build_pixel_decoder,
    build_predictor,
)
from salt.models.attentive_pool import AttentiveProbe
from salt.objectives import StudentObjective, SupervisedObjective, TeacherObjective, VJEPAObjective

GEOM = {"img_size": 224, "num_frames": 16}
GRID = TokenGrid.from_clip(num_frames=16, img_size=224, patch_size=16, tubelet_size=2)
BATCH = 2


def drawn_masks() -> list[MaskBatch]:
    return build_mask_generator("multiblock", grid=GRID)(BATCH, torch.Generator().manual_seed(0))


def test_vit_b16_image_forward_matches_published_gflops() -> None:
    # timm lists vit_base_patch16_224 at 17.6 GMACs (197 tokens incl. the class token).
    spec = ENCODER_SIZES["base"]
    flops = encoder_forward_flops(spec, n_tokens=196, n_keep=197, patch_dim=3 * 16 * 16) + linear_flops(1, 768, 1000)
    assert flops / 2 == pytest.approx(17.6e9, rel=0.01)


def test_step_flops_arithmetic() -> None:
    f = StepFlops(trained_forward=10.0, frozen_forward=4.0, no_input_grad=1.0)
    assert (f.forward, f.backward, f.train_step) == (14.0, 19.0, 33.0)
    assert f.scaled(2).train_step == 66.0
    assert block_flops(10, 8, 32) == 2 * 10 * (3 * 64 + 64 + 2 * 8 * 32) + 4 * 100 * 8


def test_encoder_forward_matches_counter() -> None:
    with torch.device("meta"):
        enc = build_encoder("small", depth=3, **GEOM)
        x = torch.empty(BATCH, 3, 16, 224, 224)
        keep = torch.zeros(BATCH, 300, dtype=torch.long)
        with FlopCounterMode(display=False) as fc:
            enc(x, keep)
    assert fc.get_total_flops() == BATCH * encoder_forward_flops(enc.spec, n_tokens=1568, n_keep=300, patch_dim=1536)


def build_objectives(size: str, teacher_size: str) -> dict[str, torch.nn.Module]:
    with torch.device("meta"):
        def enc(s: str = size):  # noqa: ANN202
            return build_encoder(s, **GEOM)
        e, t = enc(), enc(teacher_size)
        return {
            "teacher": TeacherObjective(e, build_pixel_decoder(grid=GRID, in_dim=e.embed_dim, patch_size=16,
                                                               tubelet_size=2)),
            "student": StudentObjective(enc(), build_predictor(grid=GRID, in_dim=e.embed_dim, out_dim=t.embed_dim), t),
            "vjepa": VJEPAObjective(enc(), build_predictor(grid=GRID, in_dim=e.embed_dim, out_dim=e.embed_dim)),
            "supervised": SupervisedObjective(enc(), AttentiveProbe(e.embed_dim, 10)),
        }


@pytest.mark.parametrize(("size", "teacher_size"), [("tiny", "small"), ("small", "tiny")])
def test_objective_steps_match_counter(size: str, teacher_size: str) -> None:
    masks = drawn_masks()
    meta_masks = [m.to("meta") for m in masks]
    clips = torch.empty(BATCH, 3, 16, 224, 224, device="meta")
    for name, obj in build_objectives(size, teacher_size).items():
        labels = torch.zeros(BATCH, dtype=torch.long, device="meta")
        with FlopCounterMode(display=False) as fc_fwd:
            out = obj(clips, meta_masks, labels=labels if obj.needs_labels else None)
        with FlopCounterMode(display=False) as fc_bwd:
            out.loss.backward()
        fwd, bwd = fc_fwd.get_total_flops(), fc_bwd.get_total_flops()
        analytic = obj.step_flops(masks).scaled(BATCH)
        assert fwd == pytest.approx(analytic.forward, rel=1e-9), name
        assert bwd == pytest.approx(analytic.backward, rel=1e-9), name
        assert fwd + bwd == pytest.approx(analytic.train_step, rel=1e-9), name


def test_student_with_cached_targets_drops_only_the_teacher() -> None:
    masks = drawn_masks()
    obj = build_objectives("tiny", "small")["student"]
    online = obj.step_flops(masks)
    cached = obj.step_flops(masks, cached_targets=True)
    teacher_fwd = encoder_forward_flops(ENCODER_SIZES["small"], n_tokens=1568, n_keep=1568, patch_dim=1536)
    assert online.frozen_forward == teacher_fwd and cached.frozen_forward == 0.0
    assert online.train_step - cached.train_step == teacher_fwd


def test_larger_teacher_costs_one_forward_more() -> None:
    counts = [(400.0, 900.0)]
    kw = {"n_tokens": 1568, "patch_dim": 1536, "masks": counts}
    small, large = ENCODER_SIZES["small"], ENCODER_SIZES["large"]
    a = student_step_flops(small, DEFAULT_PREDICTOR, small, target_dim=384, **kw)
    b = student_step_flops(small, DEFAULT_PREDICTOR, large, target_dim=1024, **kw)
    head = linear_flops(900, DEFAULT_PREDICTOR.width, 1024 - 384)
    assert b.trained_forward - a.trained_forward == pytest.approx(head)
    assert b.frozen_forward - a.frozen_forward == pytest.approx(
        encoder_forward_flops(large, n_tokens=1568, n_keep=1568, patch_dim=1536)
        - encoder_forward_flops(small, n_tokens=1568, n_keep=1568, patch_dim=1536))
    t = teacher_step_flops(large, DEFAULT_PIXEL_DECODER, **kw)
    assert t.frozen_forward == 0.0 and t.no_input_grad == linear_flops(1568, 1536, 1024)
