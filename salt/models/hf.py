"""SALT encoders as Hugging Face transformers' V-JEPA 2 models (`transformers.VJEPA2Model`), both ways.

A SALT encoder with RoPE (`model.use_rope: true`) is V-JEPA 2's encoder: a Conv3d tubelet embedding, pre-norm
blocks whose attention rotates q and k by the token's (t, h, w) (V-JEPA 2's convention, salt.models.rope),
a final LayerNorm, no position table. The weights map one to one, but for timm's fused qkv projection,
which transformers keeps as separate query, key and value linears. A predictor maps too when it has the
same shape (RoPE, projecting back to the encoder's width: the V-JEPA stage's, or a student's whose teacher
has the student's width); transformers' predictor has N mask tokens and sorts tokens by position, which
with RoPE computes the same function.

Export needs transformers (the `hf` extra); reading a V-JEPA 2 folder does not: its config.json and
safetensors are read directly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from salt.models.encoder import VideoViT
from salt.models.sizes import ENCODER_SIZES, EncoderSpec
from salt.models.token_decoder import TokenDecoder

MODEL_TYPE = "vjepa2"
EXTRA = "pip install -e '.[hf]' (make venv installs it)"


class HFFormatError(ValueError):
    """A model that cannot be written or read as a transformers V-JEPA 2 folder; the message says why."""


def is_hf_folder(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def _transformers():
    try:
        import transformers
    except ImportError:
        raise HFFormatError(f"the Hugging Face export needs transformers: {EXTRA}") from None
    if not hasattr(transformers, "VJEPA2Model"):
        raise HFFormatError(f"transformers {transformers.__version__} has no VJEPA2Model (4.53 or newer has): {EXTRA}")
    return transformers


# ---------------------------------------------------------------- weight names

def _block_to_hf(ours: dict[str, torch.Tensor], prefix: str, i: int, out: dict[str, torch.Tensor]) -> None:
    """One timm block `blocks.{i}.*` → V-JEPA 2's `{prefix}.layer.{i}.*` (qkv split in three)."""
    b, h = f"blocks.{i}.", f"{prefix}.layer.{i}."
    for ours_name, hf_name in (("norm1", "norm1"), ("attn.proj", "attention.proj"), ("norm2", "norm2"),
                               ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
        for p in ("weight", "bias"):
            out[f"{h}{hf_name}.{p}"] = ours[f"{b}{ours_name}.{p}"]
    for p in ("weight", "bias"):
        q, k, v = ours[f"{b}attn.qkv.{p}"].chunk(3, dim=0)  # timm's rows: all heads' q, then k, then v
        out[f"{h}attention.query.{p}"], out[f"{h}attention.key.{p}"], out[f"{h}attention.value.{p}"] = q, k, v


def _block_from_hf(hf: dict[str, torch.Tensor], prefix: str, i: int, out: dict[str, torch.Tensor]) -> None:
    b, h = f"blocks.{i}.", f"{prefix}.layer.{i}."
    for ours_name, hf_name in (("norm1", "norm1"), ("attn.proj", "attention.proj"), ("norm2", "norm2"),
                               ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
        for p in ("weight", "bias"):
            out[f"{b}{ours_name}.{p}"] = hf[f"{h}{hf_name}.{p}"]
    for p in ("weight", "bias"):
        out[f"{b}attn.qkv.{p}"] = torch.cat([hf[f"{h}attention.{n}.{p}"] for n in ("query", "key", "value")], dim=0)


def encoder_to_hf(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A VideoViT's state dict → `encoder.*` of VJEPA2Model."""
    out = {"encoder.embeddings.patch_embeddings.proj.weight": state["patch_embed.proj.weight"],
           "encoder.embeddings.patch_embeddings.proj.bias": state["patch_embed.proj.bias"],
           "encoder.layernorm.weight": state["norm.weight"], "encoder.layernorm.bias": state["norm.bias"]}
    for i in range(depth):
        _block_to_hf(state, "encoder", i, out)
    return out


def encoder_from_hf(hf: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """`encoder.*` of a VJEPA2Model → a VideoViT's state dict."""
    out = {"patch_embed.proj.weight": hf["encoder.embeddings.patch_embeddings.proj.weight"],
           "patch_embed.proj.bias": hf["encoder.embeddings.patch_embeddings.proj.bias"],
           "norm.weight": hf["encoder.layernorm.weight"], "norm.bias": hf["encoder.layernorm.bias"]}
    for i in range(depth):
        _block_from_hf(hf, "encoder", i, out)
    return out


def predictor_to_hf(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A TokenDecoder's state dict → `predictor.*` of VJEPA2Model (its one mask token as V-JEPA 2's
    mask token 0, with pred_num_mask_tokens 1)."""
    out = {"predictor.embeddings.predictor_embeddings.weight": state["embed.weight"],
           "predictor.embeddings.predictor_embeddings.bias": state["embed.bias"],
           "predictor.embeddings.mask_tokens": state["mask_token"].reshape(1, 1, 1, -1),
           "predictor.layernorm.weight": state["norm.weight"], "predictor.layernorm.bias": state["norm.bias"],
           "predictor.proj.weight": state["head.weight"], "predictor.proj.bias": state["head.bias"]}
    for i in range(depth):
        _block_to_hf(state, "predictor", i, out)
    return out


def predictor_exportable(encoder: VideoViT, predictor: TokenDecoder | None) -> str | None:
    """None when `predictor` maps onto V-JEPA 2's predictor for `encoder`, else why not."""
    if predictor is None:
        return "the run has no predictor (the teacher stage trains a pixel decoder)"
    if not predictor.use_rope:
        return "the predictor has a sincos position table"
    if predictor.in_dim != encoder.embed_dim or predictor.out_dim != encoder.embed_dim:
        return (f"the predictor maps width {predictor.in_dim} to {predictor.out_dim}; V-JEPA 2's maps the encoder's "
                f"width ({encoder.embed_dim}) back to itself")
    return None


# ---------------------------------------------------------------- export


def hf_config(encoder: VideoViT, predictor: TokenDecoder | None, num_frames: int, img_size: int):
    transformers = _transformers()
    spec, pe = encoder.spec, encoder.patch_embed
    # without an exportable predictor: a one-block placeholder (transformers initialises it; the encoder's
    # features do not depend on it)
    pspec = predictor.spec if predictor is not None else None
    pred_width = pspec.width if pspec else spec.head_dim * max(1, min(spec.num_heads, 384 // spec.head_dim))
    return transformers.VJEPA2Config(
        patch_size=pe.patch_size, crop_size=img_size, frames_per_clip=num_frames, tubelet_size=pe.tubelet_size,
        hidden_size=spec.embed_dim, in_chans=pe.in_chans, num_attention_heads=spec.num_heads,
        num_hidden_layers=spec.depth, mlp_ratio=spec.mlp_ratio, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu",
        pred_hidden_size=pred_width, pred_num_attention_heads=pspec.heads if pspec else pred_width // spec.head_dim,
        pred_num_hidden_layers=pspec.depth if pspec else 1, pred_num_mask_tokens=1,
        pred_mlp_ratio=pspec.mlp_ratio if pspec else 4.0)


def export_hf(encoder: VideoViT, out: str | Path, *, num_frames: int, img_size: int, mean: tuple[float, ...],
              std: tuple[float, ...], predictor: TokenDecoder | None = None, provenance: dict | None = None) -> Path:
    """Writes `out` (a folder that transformers.AutoModel.from_pretrained loads as a VJEPA2Model, and its
    video processor with salt's evaluation normalisation and crop), atomically: built beside it, renamed."""
    if not encoder.use_rope:
        raise HFFormatError("transformers' V-JEPA 2 has no absolute position table: this encoder adds a sincos one "
                            "(model.use_rope=false), so no V-JEPA 2 model computes its features. Export a RoPE "
                            "encoder (trained with --model.use_rope=true)")
    transformers = _transformers()
    if predictor is not None and predictor_exportable(encoder, predictor):
        predictor = None
    config = hf_config(encoder, predictor, num_frames, img_size)
    model = transformers.VJEPA2Model(config).eval()
    state = encoder_to_hf({k: v.detach().float().cpu() for k, v in encoder.state_dict().items()}, encoder.spec.depth)
    if predictor is not None:
        state.update(predictor_to_hf({k: v.detach().float().cpu() for k, v in predictor.state_dict().items()},
                                     predictor.spec.depth))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if predictor is not None or not k.startswith("predictor.")]
    if missing or unexpected:
        raise HFFormatError(f"weights do not map onto VJEPA2Model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor = transformers.VJEPA2VideoProcessor(crop_size=img_size, image_mean=list(mean), image_std=list(std))
        processor.save_pretrained(tmp)
        (tmp / "salt.json").write_text(json.dumps({"predictor": predictor is not None, **(provenance or {})},
                                                  indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------- import


def hf_spec(config: dict) -> tuple[str, EncoderSpec]:
    """The registered encoder size of a V-JEPA 2 config (width, heads and MLP ratio), with its depth."""
    width, heads, ratio = config["hidden_size"], config["num_attention_heads"], float(config.get("mlp_ratio", 4.0))
    for name, spec in ENCODER_SIZES.items():
        if (spec.embed_dim, spec.num_heads) == (width, heads) and abs(spec.mlp_ratio - ratio) < 1e-6:
            return name, EncoderSpec(width, config["num_hidden_layers"], heads, spec.mlp_ratio)
    known = ", ".join(f"{n} ({s.embed_dim}/{s.num_heads})" for n, s in ENCODER_SIZES.items())
    raise HFFormatError(f"a V-JEPA 2 encoder of width {width}, {heads} heads, MLP ratio {ratio:g} is not a size salt "
                        f"builds (width/heads: {known})")


def hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder (one model.safetensors or its shards), on the CPU."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else \
        ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if not path.exists():
            raise HFFormatError(f"{folder} has no {name} (transformers folders keep their weights in safetensors)")
        state.update(load_file(str(path)))
    return {k.removeprefix("vjepa2."): v for k, v in state.items()}  # a VJEPA2ForVideoClassification folder too


def hf_weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return [folder / n for n in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [folder / "model.safetensors"]
