"""The one way to open a video loader: every caller (training, the target cache job and its verify,
the probe, the throughput measure) names a loader kind and gets the same batches for the same config."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from salt.data.config import LoaderConfig
from salt.data.loader_base import VideoLoaderBase
from salt.host_memory import keep_freed_memory
from salt.masks.factory import MaskGenerator

LOADERS = ("dali", "reference")  # DALI (GPU or CPU decoding) | torch DataLoader + PyAV (the reference)


def open_loader(cfg: LoaderConfig, kind: str = "dali", *, rank: int = 0, world: int = 1,
                mask_generator: MaskGenerator | None = None, device: torch.device | None = None,
                only_shards: Sequence[int] | None = None) -> VideoLoaderBase:
    """device: where the batches are used; a CUDA device gives DALI that GPU (decoding there when
    cfg.device allows) and makes host tensors come pinned. only_shards: read only these shard numbers
    (the target cache job)."""
    if not cfg.shards:
        raise ValueError("no shard set: pass a folder made by dataprep.shards")
    keep_freed_memory()  # batch-sized host tensors every step: see salt.host_memory
    if kind == "dali":
        from salt.data.dali_loader import DaliVideoLoader

        return DaliVideoLoader(cfg, rank=rank, world=world, mask_generator=mask_generator, training_device=device,
                               only_shards=only_shards)
    if kind == "reference":
        from salt.data.reference_loader import ReferenceVideoLoader

        return ReferenceVideoLoader(cfg, rank=rank, world=world, mask_generator=mask_generator,
                                    only_shards=only_shards, pin_memory=device is not None and device.type == "cuda")
    raise ValueError(f"unknown loader {kind!r}; expected one of {LOADERS}")
