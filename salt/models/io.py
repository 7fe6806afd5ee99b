"""An encoder alone, as `encoder.safetensors` + `encoder.json` (its architecture): the frozen teacher of
a student run, and what downstream users load. Wherever an encoder path is taken (--teacher, --init, the
probe, the target-cache job), a transformers V-JEPA 2 folder works too (salt.models.hf)."""

from __future__ import annotations

import hashlib
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


def read_encoder_info(path: str | Path) -> EncoderInfo:
    """The architecture and provenance of an exported encoder or a transformers V-JEPA 2 folder."""
    from salt.models.hf import hf_spec, is_hf_folder

    if is_hf_folder(path):
        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        size, spec = hf_spec(config)
        extra = json.loads((folder / "salt.json").read_text()) if (folder / "salt.json").exists() else {}
        patch = config["patch_size"]
        if not isinstance(patch, int):
            patch = patch[0]
        return EncoderInfo(size=size, depth=spec.depth, img_size=config["crop_size"],
                           num_frames=config["frames_per_clip"], patch_size=patch, tubelet_size=config["tubelet_size"],
                           use_rope=True, embed_dim=spec.embed_dim, stage=extra.get("stage", "vjepa2"),
                           step=extra.get("step", 0), frame_stride=extra.get("frame_stride", 4))
    meta = json.loads(find_encoder(path).with_suffix(".json").read_text())
    meta.pop("sha256", None)
    return EncoderInfo(**meta)


def encoder_home(path: str | Path) -> Path:
    """The folder an encoder's results go beside (a run's export folder, or a V-JEPA 2 folder itself)."""
    from salt.models.hf import is_hf_folder

    return Path(path) if is_hf_folder(path) else find_encoder(path).parent


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VideoViT, EncoderInfo]:
    """The exported encoder (or a transformers V-JEPA 2 folder's) on `map_location`. Built on the meta device
    and given the file's tensors, so no time goes into a random initialisation that the weights replace
    (seconds per load at ViT-L size)."""
    from salt.models.hf import encoder_from_hf, hf_weights, is_hf_folder

    info = read_encoder_info(path)
    if is_hf_folder(path):
        weights = Path(path)
        state = {k: v.to(map_location) for k, v in encoder_from_hf(hf_weights(weights), info.depth).items()}
    else:
        weights = find_encoder(path)
        state = load_file(str(weights), device=str(map_location))
    with torch.device("meta"):
        encoder = build_encoder(info.size, img_size=info.img_size, num_frames=info.num_frames,
                                patch_size=info.patch_size, tubelet_size=info.tubelet_size, depth=info.depth,
                                use_rope=info.use_rope)
    missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the encoder its JSON describes: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    encoder.reset_fixed_buffers(torch.device(map_location))
    return encoder, info


def encoder_fingerprint(path: str | Path) -> str:
    """sha256 of the weights (of each weight file in order, for a transformers folder)."""
    from salt.models.hf import hf_weight_files, is_hf_folder

    if is_hf_folder(path):
        files = hf_weight_files(Path(path))
        return files and (file_sha256(files[0]) if len(files) == 1 else
                          hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest())
    weights = find_encoder(path)
    meta = json.loads(weights.with_suffix(".json").read_text())
    return meta.get("sha256") or file_sha256(weights)
