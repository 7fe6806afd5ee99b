"""Models, masks and the stage's objective, built from the run config."""

from __future__ import annotations

import torch
from torch import nn

from salt.config import Config, ConfigError
from salt.engine.export import EncoderInfo, load_encoder
from salt.masks import BlockSpec, MaskGenerator, TokenGrid, build_mask_generator
from salt.models import DecoderSpec, VideoViT, build_encoder, build_pixel_decoder, build_predictor, get_spec
from salt.models.attentive_pool import AttentiveProbe
from salt.objectives import StudentObjective, SupervisedObjective, TeacherObjective, VJEPAObjective


def token_grid(cfg: Config) -> TokenGrid:
    return TokenGrid.from_clip(num_frames=cfg.data.num_frames, img_size=cfg.data.crop_size,
                               patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size)


def stage_uses_masks(cfg: Config) -> bool:
    """The supervised ceiling reads whole clips; every other stage predicts masked tokens."""
    return cfg.stage != "supervised"


def build_masks(cfg: Config) -> MaskGenerator:
    blocks = [BlockSpec(b.num_blocks, b.spatial_scale, b.temporal_scale, b.aspect_ratio) for b in cfg.masks.blocks]
    return build_mask_generator(cfg.masks.kind, grid=token_grid(cfg), mask_ratio=cfg.masks.ratio, blocks=blocks)


def build_model_encoder(cfg: Config) -> VideoViT:
    enc = build_encoder(cfg.model.size, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames,
                        patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size, depth=cfg.model.depth,
                        drop_path=cfg.model.drop_path, use_rope=cfg.model.use_rope)
    enc.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return enc


def encoder_info(cfg: Config, step: int = 0) -> EncoderInfo:
    spec = get_spec(cfg.model.size, cfg.model.depth)
    return EncoderInfo(size=cfg.model.size, depth=spec.depth, img_size=cfg.data.crop_size,
                       num_frames=cfg.data.num_frames, patch_size=cfg.model.patch_size,
                       tubelet_size=cfg.model.tubelet_size, use_rope=cfg.model.use_rope, embed_dim=spec.embed_dim,
                       stage=cfg.stage, step=step, frame_stride=cfg.data.frame_stride)


def _head(h) -> DecoderSpec:
    return DecoderSpec(h.width, h.depth, h.heads)


def load_teacher(cfg: Config) -> tuple[VideoViT, EncoderInfo]:
    """The frozen teacher, checked against the student's clip geometry."""
    try:
        teacher, info = load_encoder(cfg.teacher.path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"teacher: {e}") from None
    grid = token_grid(cfg)
    if teacher.grid != grid:
        raise ConfigError(
            f"teacher {cfg.teacher.path} was trained on {info.num_frames}x{info.img_size}x{info.img_size} clips with "
            f"patch {info.patch_size} and tubelet {info.tubelet_size} ({teacher.grid.shape} tokens), the student's "
            f"predictor needs {grid.shape} tokens: set data.num_frames, data.crop_size, model.patch_size and "
            f"model.tubelet_size to the teacher's")
    return teacher, info


def build_objective(cfg: Config, teacher_width: int | None = None, num_classes: int | None = None) -> nn.Module:
    """teacher_width: the student stage's target width when training from a cache (no teacher loaded);
    num_classes: the supervised stage's, from the labelled shard set."""
    grid = token_grid(cfg)
    if cfg.stage == "supervised":
        if not num_classes or num_classes < 2:
            raise ConfigError("the supervised stage needs labelled shards (at least 2 classes in manifest.json)")
        enc = build_model_encoder(cfg)
        return SupervisedObjective(enc, AttentiveProbe(enc.embed_dim, num_classes),
                                   label_smoothing=cfg.supervised.label_smoothing)
    if cfg.stage == "teacher":
        enc = build_model_encoder(cfg)
        dec = build_pixel_decoder(grid=grid, in_dim=enc.embed_dim, patch_size=cfg.model.patch_size,
                                  tubelet_size=cfg.model.tubelet_size, spec=_head(cfg.decoder),
                                  use_rope=cfg.model.use_rope)
        return TeacherObjective(enc, dec, loss=cfg.pixel_loss.kind, norm_pix=cfg.pixel_loss.norm_pix)
    if cfg.stage == "student":
        student = build_model_encoder(cfg)
        teacher = None
        if not cfg.targets.cache:
            teacher, _ = load_teacher(cfg)
            teacher_width = teacher.embed_dim
        if teacher_width is None:
            raise ConfigError("student stage from a target cache needs the cache's target width")
        pred = build_predictor(grid=grid, in_dim=student.embed_dim, out_dim=teacher_width, spec=_head(cfg.predictor),
                               use_rope=cfg.model.use_rope)
        dtype = torch.bfloat16 if cfg.teacher.dtype == "bf16" else None
        return StudentObjective(student, pred, teacher, teacher_dtype=dtype)
    enc = build_model_encoder(cfg)
    pred = build_predictor(grid=grid, in_dim=enc.embed_dim, out_dim=enc.embed_dim, spec=_head(cfg.predictor),
                           use_rope=cfg.model.use_rope)
    return VJEPAObjective(enc, pred)


def main_encoder(objective: nn.Module) -> VideoViT:
    """The encoder a stage trains (and exports)."""
    for name in ("encoder", "student"):
        if isinstance(getattr(objective, name, None), VideoViT):
            return getattr(objective, name)
    raise TypeError(f"{type(objective).__name__} has no encoder")


def steps_for_budget(cfg: Config, budget: float, draws: int = 50, num_classes: int = 10) -> int:
    """Optimizer steps of `cfg`'s stage that spend `budget` model FLOPs (analytic FLOPs of the built
    objective, on the meta device, averaged over `draws` mask batches): matched-compute baselines."""
    from salt.flops import objective_step_flops

    with torch.device("meta"):
        objective = build_objective(cfg, num_classes=num_classes)
    gen, g = build_masks(cfg), torch.Generator().manual_seed(0)
    clips = cfg.data.batch_size * cfg.data.views_per_sample * cfg.optim.accumulation
    per_clip = sum(objective_step_flops(objective, gen(clips, g)).train_step for _ in range(draws)) / draws
    return max(1, round(budget / (per_clip * clips)))
