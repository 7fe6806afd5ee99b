"""The pieces every stage builds from the run config: token grid, masks, encoder, heads, the frozen teacher.

Each stage's objective assembles its own from these (salt/objectives/*, `from_config`)."""

from __future__ import annotations

import torch

from salt.config import Config, ConfigError
from salt.masks import MaskGenerator, TokenGrid, build_mask_generator
from salt.models import VideoViT, build_encoder, get_spec
from salt.models.io import EncoderInfo, load_encoder
from salt.stages import build_objective


def token_grid(cfg: Config) -> TokenGrid:
    return TokenGrid.from_clip(num_frames=cfg.data.num_frames, img_size=cfg.data.crop_size,
                               patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size)


def build_masks(cfg: Config) -> MaskGenerator:
    return build_mask_generator(cfg.masks.kind, grid=token_grid(cfg), mask_ratio=cfg.masks.ratio,
                                blocks=cfg.masks.blocks)


def build_model_encoder(cfg: Config) -> VideoViT:
    enc = build_encoder(cfg.model.size, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames,
                        patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size, depth=cfg.model.depth,
                        drop_path=cfg.model.drop_path, use_rope=cfg.model.use_rope)
    return enc  # model.grad_checkpointing and run.compile: salt.models.blocks.set_block_options, on the whole objective


def encoder_info(cfg: Config, step: int = 0) -> EncoderInfo:
    spec = get_spec(cfg.model.size, cfg.model.depth)
    return EncoderInfo(size=cfg.model.size, depth=spec.depth, img_size=cfg.data.crop_size,
                       num_frames=cfg.data.num_frames, patch_size=cfg.model.patch_size,
                       tubelet_size=cfg.model.tubelet_size, use_rope=cfg.model.use_rope, embed_dim=spec.embed_dim,
                       stage=cfg.stage, step=step, frame_stride=cfg.data.frame_stride)


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


def steps_for_budget(cfg: Config, budget: float, draws: int = 50, num_classes: int = 10) -> int:
    """Optimizer steps of `cfg`'s stage that spend `budget` model FLOPs (analytic FLOPs of the built
    objective, on the meta device, averaged over `draws` mask batches): matched-compute baselines."""
    with torch.device("meta"):
        objective = build_objective(cfg, num_classes=num_classes)
    gen, g = build_masks(cfg), torch.Generator().manual_seed(0)
    clips = cfg.data.batch_size * cfg.data.views_per_sample * cfg.optim.accumulation
    per_clip = sum(objective.step_flops(gen(clips, g)).train_step for _ in range(draws)) / draws
    return max(1, round(budget / (per_clip * clips)))
