"""Precision names in one place: the run config, the target cache and the job say fp32/bf16/fp16; a
DeepSpeed JSON says float32/bfloat16/float16."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEEPSPEED_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def torch_dtype(name: str) -> torch.dtype:
    """fp32 | bf16 | fp16 (or DeepSpeed's float32 | bfloat16 | float16) -> the torch dtype."""
    short = DEEPSPEED_NAMES.get(name, name)
    if short not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[short]


def short_name(dtype: torch.dtype | None) -> str | None:
    """torch.bfloat16 -> "bf16"; None stays None."""
    if dtype is None:
        return None
    return next(k for k, v in DTYPES.items() if v == dtype)
