"""An encoder alone, as `encoder.safetensors` + `encoder.json` (its architecture): the frozen teacher of
a student run, and what downstream users load."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from salt.atomic import file_sha256, write_json_atomic
from salt.models.encoder import VideoViT, build_encoder

EXPORT_DIR = "export"


@dataclass(frozen=True)
class EncoderInfo:
    size: str
    depth: int
    img_size: int
    num_frames: int
    patch_size: int
    tubelet_size: int
    use_rope: bool
    embed_dim: int
    stage: str = ""
    step: int = 0
    frame_stride: int = 4  # the training clips' frame stride (evaluation reuses it)


def export_encoder(encoder: VideoViT, info: EncoderInfo, folder: str | Path) -> Path:
    """Writes folder/encoder.safetensors (fp32) and folder/encoder.json, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "encoder.safetensors"
    tmp = folder / ".encoder.safetensors.partial"
    state = {k: v.detach().float().contiguous().cpu() for k, v in encoder.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "salt-encoder/1"})
    tmp.replace(weights)
    write_json_atomic(folder / "encoder.json", {**asdict(info), "sha256": file_sha256(weights)})
    return weights


def find_encoder(path: str | Path) -> Path:
    """A run folder (its export/encoder.safetensors), an export folder, or the .safetensors file."""
    p = Path(path)
    for candidate in (p, p / "encoder.safetensors", p / EXPORT_DIR / "encoder.safetensors"):
        if candidate.is_file() and candidate.suffix == ".safetensors":
            if not candidate.with_suffix(".json").exists():
                raise FileNotFoundError(f"{candidate} has no {candidate.with_suffix('.json').name} beside it")
            return candidate
    if not p.exists():
        raise FileNotFoundError(f"no encoder at {p}: the path does not exist")
    raise FileNotFoundError(f"no exported encoder at {p} (looked for encoder.safetensors and "
                            f"{EXPORT_DIR}/encoder.safetensors); a run exports its encoder at every checkpoint")


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VideoViT, EncoderInfo]:
    """The exported encoder on `map_location`. Built on the meta device and given the file's tensors, so no
    time goes into a random initialisation that the weights replace (seconds per load at ViT-L size)."""
    weights = find_encoder(path)
    meta = json.loads(weights.with_suffix(".json").read_text())
    meta.pop("sha256", None)
    info = EncoderInfo(**meta)
    with torch.device("meta"):
        encoder = build_encoder(info.size, img_size=info.img_size, num_frames=info.num_frames,
                                patch_size=info.patch_size, tubelet_size=info.tubelet_size, depth=info.depth,
                                use_rope=info.use_rope)
    state = load_file(str(weights), device=str(map_location))
    missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the encoder its JSON describes: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    encoder.reset_fixed_buffers(torch.device(map_location))
    return encoder, info


def encoder_fingerprint(path: str | Path) -> str:
    weights = find_encoder(path)
    meta = json.loads(weights.with_suffix(".json").read_text())
    return meta.get("sha256") or file_sha256(weights)
