"""The pieces every stage builds from the run config: token grid, masks, encoder, heads, the frozen teacher.

Each stage's objective assembles its own from these (salt/objectives/*, `from_config`)."""

from __future__ import annotations

from salt.config import Config, ConfigError
from salt.masks import MaskGenerator, TokenGrid, build_mask_generator
from salt.models import VideoViT, build_encoder, get_spec
from salt.models.io import EncoderInfo, load_encoder


def token_grid(cfg: Config) -> TokenGrid:
    return TokenGrid.from_clip(num_frames=cfg.data.num_frames, img_size=cfg.data.crop_size,
                               patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size)


def build_masks(cfg: Config) -> MaskGenerator:
    return build_mask_generator(cfg.masks.kind, grid=token_grid(cfg), mask_ratio=cfg.masks.ratio,
                                blocks=cfg.masks.blocks)


def build_model_encoder(cfg: Config) -> VideoViT:
    """The encoder a stage trains, initialised at random or from model.init (model.grad_checkpointing and
    run.compile: salt.models.blocks.set_block_options, on the whole objective)."""
    enc = build_encoder(cfg.model.size, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames,
                        patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size, depth=cfg.model.depth,
                        drop_path=cfg.model.drop_path, use_rope=cfg.model.use_rope)
    if cfg.model.init:
        init_from(enc, cfg.model.init)
    return enc


def init_from(encoder: VideoViT, path: str) -> None:
    """Copies the weights of the encoder at `path` into `encoder`, refusing another architecture."""
    try:
        source, info = load_encoder(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"model.init: {e}") from None
    mine = (encoder.spec.embed_dim, len(encoder.blocks), encoder.spec.num_heads, encoder.use_rope, encoder.grid,
            encoder.patch_embed.patch_size, encoder.patch_embed.tubelet_size)
    theirs = (source.spec.embed_dim, len(source.blocks), source.spec.num_heads, source.use_rope, source.grid,
              source.patch_embed.patch_size, source.patch_embed.tubelet_size)
    if mine != theirs:
        names = ("width", "depth", "heads", "use_rope", "token grid", "patch", "tubelet")
        diff = "; ".join(f"{n} {b} there, {a} here" for n, a, b in zip(names, mine, theirs, strict=True) if a != b)
        raise ConfigError(f"model.init {path} is another encoder ({diff}): set model.size, model.depth, "
                          "model.use_rope and the clip geometry to its own")
    missing, unexpected = encoder.load_state_dict(source.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(f"model.init {path}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")


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
