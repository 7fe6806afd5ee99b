"""Objectives: pixel targets, frozen teacher, cached targets, EMA, and single-batch overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from salt.masks import MaskBatch, build_mask_generator
from salt.models import DecoderSpec, EncoderSpec, VideoViT, build_pixel_decoder, build_predictor
from salt.objectives import (
    StudentObjective,
    TeacherObjective,
    VJEPAObjective,
    compute_teacher_targets,
    momentum_schedule,
    pixel_targets,
)

# Very small geometry: 4 frames of 16x16, patch 4, tubelet 2 -> 2 x 4 x 4 = 32 tokens.
GEOM = {"img_size": 16, "num_frames": 4, "patch_size": 4, "tubelet_size": 2}
DEC = DecoderSpec(64, 2, 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def encoder(width: int = 64, seed: int = 0) -> VideoViT:
    torch.manual_seed(seed)
    return VideoViT(spec=EncoderSpec(width, 2, 4), **GEOM)


def clips(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def masks(kind: str = "multiblock", batch: int = 2, seed: int = 0) -> list[MaskBatch]:
    grid = encoder().grid
    return build_mask_generator(kind, grid=grid, mask_ratio=0.5)(batch, torch.Generator().manual_seed(seed))


def params_of(modules: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def student_objective(teacher_width: int = 96) -> StudentObjective:
    student = encoder()
    grid = student.grid
    return StudentObjective(student, build_predictor(grid=grid, in_dim=64, out_dim=teacher_width, spec=DEC),
                            encoder(teacher_width, seed=1))


def test_pixel_targets_match_direct_computation() -> None:
    x = clips(2)
    p, t = 4, 2
    got = pixel_targets(x, p, t, normalize=True)  # (B, N, t*p*p*C)
    raw = pixel_targets(x, p, t, normalize=False)
    assert got.shape == raw.shape == (2, 32, 2 * 4 * 4 * 3)
    for b, (ti, hi, wi) in [(0, (0, 0, 0)), (1, (1, 2, 3)), (0, (1, 3, 1))]:
        cube = x[b, :, ti * t:(ti + 1) * t, hi * p:(hi + 1) * p, wi * p:(wi + 1) * p]  # (C, t, p, p)
        pix = cube.reshape(3, -1).T  # (t*p*p, C), pixels in (t, h, w) order
        norm = (pix - pix.mean(0)) / (pix.std(0, unbiased=True) + 1e-6)  # per patch, per channel
        idx = ti * 16 + hi * 4 + wi
        assert torch.allclose(raw[b, idx], pix.flatten(), atol=1e-6)
        assert torch.allclose(got[b, idx], norm.flatten(), atol=1e-5)
    # Invariant to a per-channel affine change of the input normalisation.
    scaled = pixel_targets(x * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1, 1) + 1.0, p, t)
    assert torch.allclose(scaled, got, atol=1e-4)


def test_teacher_objective_losses() -> None:
    enc = encoder()
    dec = build_pixel_decoder(grid=enc.grid, in_dim=64, patch_size=4, tubelet_size=2, spec=DEC)
    mse, l1 = TeacherObjective(enc, dec, loss="mse"), TeacherObjective(enc, dec, loss="l1", norm_pix=False)
    m = masks()
    out = mse(clips(), m)
    assert out.loss.dim() == 0 and out.loss.requires_grad
    assert out.metrics["loss"] == pytest.approx((out.metrics["loss_mask0"] + out.metrics["loss_mask1"]) / 2)
    # Hand computation for one mask.
    (m0,) = masks("random")
    x = clips()
    with torch.no_grad():
        z = enc(x, m0.context_idx)
        pred = dec(z, m0.context_idx, m0.pred_idx)
        tgt = torch.stack([pixel_targets(x, 4, 2, False)[b, m0.pred_idx[b]] for b in range(2)])
        assert float(l1(x, m0).loss) == pytest.approx(float(F.l1_loss(pred, tgt)), rel=1e-5)
    assert {id(p) for p in params_of(mse.trainable_modules())} == {id(p) for p in mse.parameters()}
    with pytest.raises(ValueError):
        TeacherObjective(enc, dec, loss="huber")


def test_teacher_targets_are_layer_normed_and_need_eval() -> None:
    teacher = encoder(96).eval()
    t = compute_teacher_targets(teacher, clips())
    assert t.shape == (2, 32, 96) and t.dtype == torch.float32 and not t.requires_grad
    assert torch.allclose(t.mean(-1), torch.zeros(2, 32), atol=1e-5)
    assert torch.allclose(t.var(-1, unbiased=False), torch.ones(2, 32), atol=1e-3)
    with pytest.raises(RuntimeError, match="eval"):
        compute_teacher_targets(teacher.train(), clips())


def test_frozen_teacher_never_changes() -> None:
    obj = student_objective()
    teacher = obj.teacher
    assert teacher is not None
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainable = params_of(obj.trainable_modules())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in trainable}
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    obj.train()
    assert not teacher.training and obj.student.training
    student_before = obj.student.blocks[0].attn.qkv.weight.clone()
    for step in range(3):
        out = obj(clips(seed=step), masks(seed=step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not torch.equal(student_before, obj.student.blocks[0].attn.qkv.weight)


def test_cached_targets_give_the_same_loss() -> None:
    obj = student_objective().eval()
    x, m = clips(), masks()
    with torch.no_grad():
        online = obj(x, m).loss
        cached_targets = compute_teacher_targets(obj.teacher, x)
        cached = obj(x, m, targets=cached_targets).loss
        teacherless = StudentObjective(obj.student, obj.predictor, None)(x, m, targets=cached_targets).loss
    assert float(online) == float(cached) == float(teacherless)
    with pytest.raises(ValueError):
        obj(x, m, targets=cached_targets[:, :10])
    with pytest.raises(ValueError, match="no teacher"):
        StudentObjective(obj.student, obj.predictor, None)(x, m)


def test_teacher_in_bfloat16() -> None:
    student = encoder()
    obj = StudentObjective(student, build_predictor(grid=student.grid, in_dim=64, out_dim=64, spec=DEC), encoder(seed=3),
                           teacher_dtype=torch.bfloat16)
    assert next(obj.teacher.parameters()).dtype == torch.bfloat16
    out = obj(clips(), masks())
    out.loss.backward()
    assert torch.isfinite(out.loss) and obj.student.blocks[0].attn.qkv.weight.grad is not None


def test_student_rejects_mismatched_widths() -> None:
    student = encoder()
    with pytest.raises(ValueError, match="out_dim"):
        StudentObjective(student, build_predictor(grid=student.grid, in_dim=64, out_dim=64, spec=DEC), encoder(96))


def test_ema_update_matches_hand_computation() -> None:
    enc = encoder()
    obj = VJEPAObjective(enc, build_predictor(grid=enc.grid, in_dim=64, out_dim=64, spec=DEC))
    assert all(not p.requires_grad for p in obj.target_encoder.parameters())
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = [p.detach().clone() for p in obj.encoder.parameters()]
    target = [p.detach().clone() for p in obj.target_encoder.parameters()]
    obj.ema_update(0.9)
    for o, t, new in zip(online, target, obj.target_encoder.parameters(), strict=True):
        assert torch.allclose(new, 0.9 * t + 0.1 * o, atol=1e-6)
    obj.ema_update(0.0)
    assert all(torch.equal(a, b) for a, b in zip(obj.encoder.parameters(), obj.target_encoder.parameters(), strict=True))
    obj.train()
    assert not obj.target_encoder.training
    assert momentum_schedule(0, 100) == pytest.approx(0.998)
    assert momentum_schedule(50, 100) == pytest.approx(0.999)
    assert momentum_schedule(100, 100) == momentum_schedule(500, 100) == pytest.approx(1.0)


def test_vjepa_step_trains_only_online_parts() -> None:
    enc = encoder()
    obj = VJEPAObjective(enc, build_predictor(grid=enc.grid, in_dim=64, out_dim=64, spec=DEC))
    out = obj(clips(), masks())
    out.loss.backward()
    assert all(p.grad is None for p in obj.target_encoder.parameters())
    assert obj.encoder.blocks[0].attn.qkv.weight.grad is not None


def overfit(obj: torch.nn.Module, steps: int, lr: float) -> tuple[float, float]:
    x, m = clips(), masks("random")
    opt = torch.optim.AdamW(params_of(obj.trainable_modules()), lr=lr, weight_decay=0.0)
    obj.train()
    losses = []
    for _ in range(steps):
        out = obj(x, m)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.metrics["loss"])
    return losses[0], losses[-1]


def test_tiny_teacher_overfits_one_batch() -> None:
    enc = encoder()
    obj = TeacherObjective(enc, build_pixel_decoder(grid=enc.grid, in_dim=64, patch_size=4, tubelet_size=2, spec=DEC))
    first, last = overfit(obj, steps=100, lr=3e-3)
    assert last < first / 20


def test_tiny_student_overfits_one_batch() -> None:
    first, last = overfit(student_objective(teacher_width=64), steps=300, lr=3e-3)
    assert last < first / 10


def test_unmasked_student_is_feature_distillation_over_every_token() -> None:
    """masks.kind=full: the student encodes the whole clip and its loss is the L1 to the teacher's targets
    at every position, in order."""
    obj = student_objective().eval()
    x = clips()
    (m,) = masks("full")
    n = obj.student.num_tokens
    assert torch.equal(m.context_idx, torch.arange(n).expand(2, -1)) and torch.equal(m.pred_idx, m.context_idx)
    with torch.no_grad():
        loss = obj(x, [m]).loss
        z = obj.student(x)  # (B, N, D_student): every token, none dropped
        pred = obj.predictor(z, m.context_idx, m.pred_idx)  # (B, N, D_teacher)
        expected = F.l1_loss(pred, compute_teacher_targets(obj.teacher, x))
    assert torch.allclose(loss, expected, atol=1e-6)
