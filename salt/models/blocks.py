"""A stack of timm ViT blocks shared by the encoder, the predictor and the pixel decoder."""

from __future__ import annotations

import math
from collections.abc import Collection
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from salt.models.rope import RopeBlock

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def make_blocks(*, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float,
                use_rope: bool) -> nn.ModuleList:
    """Pre-norm blocks with qkv bias; stochastic depth rises linearly to `drop_path`."""
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    if use_rope:
        return nn.ModuleList(RopeBlock(dim, num_heads, mlp_ratio, True, r, LayerNorm) for r in rates)
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=r,
                               norm_layer=LayerNorm) for r in rates)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor] | None,
               checkpointing: bool, collect: Collection[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x (B, N, D) through every block; also returns the outputs of the blocks listed in `collect`."""
    taken = []
    for i, blk in enumerate(blocks):
        args = (x,) if rope is None else (x, rope)
        x = checkpoint(blk, *args, use_reentrant=False) if checkpointing and x.requires_grad else blk(*args)
        if i in collect:
            taken.append(x)
    return x, taken


def set_block_options(model: nn.Module, *, checkpointing: bool, compile: bool) -> int:
    """checkpointing: every block stack in `model` (encoder, predictor, decoder, the frozen teacher)
    recomputes its activations in the backward pass instead of keeping them. compile: each block is
    compiled in place (torch.compile, one graph per block shape reused across the stack: compile time
    grows with the distinct shapes, not the depth; parameter names and checkpoints are unchanged).
    Returns the number of blocks compiled."""
    compiled = 0
    for m in model.modules():
        if checkpointing and hasattr(m, "set_grad_checkpointing"):
            m.set_grad_checkpointing(True)
        if compile and isinstance(m, (Block, RopeBlock)):
            m.compile()
            compiled += 1
    return compiled


def init_weights(module: nn.Module, blocks: nn.ModuleList) -> None:
    """timm/V-JEPA init: trunc-normal(0.02) linears and convs, unit LayerNorms, then each block's
    output projections scaled by 1/sqrt(2 * layer) (V-JEPA's fix_init_weight)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for layer, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))
