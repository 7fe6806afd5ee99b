"""What a cache was made for, as content hashes: the teacher, the clip geometry, the view recipe and the
shard set. A run or a rerun of the job compares these to refuse a cache that does not fit."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from salt.data.config import LoaderConfig
from salt.models.io import encoder_fingerprint, read_encoder_info


def teacher_fingerprint(path: str | Path) -> str:
    """sha256 of the exported teacher's weights hash and architecture (not its step or run name)."""
    info = asdict(read_encoder_info(path))
    arch = {k: info.get(k) for k in ("size", "depth", "img_size", "num_frames", "patch_size", "tubelet_size",
                                     "use_rope", "embed_dim")}
    return sha256_json({"weights_sha256": encoder_fingerprint(path), "architecture": arch})


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def geometry_section(data: LoaderConfig, patch_size: int, tubelet_size: int) -> dict:
    """The clip geometry (config keys -> values): a cache is valid only for this."""
    return {"data.num_frames": data.num_frames, "data.frame_stride": data.frame_stride,
            "data.crop_size": data.crop_size, "model.patch_size": patch_size, "model.tubelet_size": tubelet_size}


def recipe_section(data: LoaderConfig) -> dict:
    """The view recipe besides the geometry (config keys -> values): crops, flip, seed, normalisation, and
    the hand-off (uint8 views are cut in torch on the CPU, float32 ones resized by DALI: other pixels)."""
    return {"data.scale": list(data.scale), "data.ratio": list(data.ratio), "data.flip": data.flip,
            "data.seed": data.seed, "data.mean": list(data.mean), "data.std": list(data.std),
            "data.handoff": data.handoff, "data.cut_views": _resolved_cut(data)}


def _resolved_cut(data: LoaderConfig) -> str:
    """Who cuts the views where this runs ("auto" is DALI on a GPU, torch on the CPU: other pixels)."""
    from salt.devices import dali_device, training_device

    device = data.device if data.device != "auto" else dali_device(training_device())[0]
    return "dali" if data.views_in_dali(device) else "torch"


def shard_set_id(manifest: dict) -> dict:
    """Names a shard set by content: its name, sample count and the (file, bytes) of its shards."""
    return {"name": manifest.get("name"), "num_samples": manifest.get("num_samples"),
            "shards_sha256": sha256_json([[s["path"], s["bytes"]] for s in manifest["shards"]])}


