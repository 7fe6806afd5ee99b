"""Analytic FLOPs of the encoder, predictor/decoder and each objective's training step (for MFU).

What is counted: matrix multiplies only, at 2*M*N*K FLOPs each — the patch-embedding Conv3d (as a
matmul over each token's C*tubelet*patch*patch pixels), every Linear (qkv, attention output projection,
both MLP layers, the decoder/predictor input projection and output head) and the two attention
matmuls (Q K^T and attention @ V, 2 * 2 * N^2 * D per block). Not counted: biases, LayerNorm,
softmax, GELU, residual adds, position embeddings, gathers, the loss and the optimizer.
This is what torch.utils.flop_counter.FlopCounterMode counts (tests/test_flops.py checks the forward
exactly on the meta device; on the CPU it misses the fused attention kernel).

A training step costs 3x the forward FLOPs of the trained parts (the backward is 2x the forward: one
matmul for the input gradient, one for the weight gradient) plus 1x the forward of a frozen teacher or
EMA target encoder, minus one forward of the trained patch embedding: its input is the clip, which
needs no gradient (that term is 1-2% of a step with multiblock masks, because the patch embedding
runs over all tokens while the blocks see only the context). With that, the analytic step equals what
FlopCounterMode counts for forward + backward. All figures are per clip unless a function says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from salt.masks.batch import MaskBatch
from salt.models.sizes import EncoderSpec
from salt.models.token_decoder import DecoderSpec


def linear_flops(tokens: float, d_in: int, d_out: int) -> float:
    return 2.0 * tokens * d_in * d_out


def attention_flops(tokens: float, dim: int) -> float:
    """Q K^T and (softmax) V over all heads: 2 matmuls of 2 * N * N * head_dim * heads."""
    return 4.0 * tokens * tokens * dim


def block_flops(tokens: float, dim: int, mlp_hidden: int) -> float:
    """One pre-norm transformer block: qkv, attention, output projection, 2-layer MLP."""
    return (linear_flops(tokens, dim, 3 * dim) + attention_flops(tokens, dim) + linear_flops(tokens, dim, dim)
            + 2 * linear_flops(tokens, dim, mlp_hidden))


def encoder_forward_flops(spec: EncoderSpec, *, n_tokens: int, n_keep: float, patch_dim: int) -> float:
    """Patch embedding over all n_tokens (it runs before the gather), blocks over the n_keep kept tokens."""
    return (linear_flops(n_tokens, patch_dim, spec.embed_dim)
            + spec.depth * block_flops(n_keep, spec.embed_dim, spec.mlp_hidden_dim))


def decoder_forward_flops(spec: DecoderSpec, *, in_dim: int, out_dim: int, n_ctx: float, n_pred: float) -> float:
    """Input projection of the context, blocks over context + mask tokens, head on the predicted tokens."""
    return (linear_flops(n_ctx, in_dim, spec.width)
            + spec.depth * block_flops(n_ctx + n_pred, spec.width, spec.mlp_hidden_dim)
            + linear_flops(n_pred, spec.width, out_dim))


@dataclass(frozen=True)
class StepFlops:
    trained_forward: float  # forward FLOPs of the parts that get gradients
    frozen_forward: float  # forward FLOPs of a frozen teacher / EMA target (no backward)
    no_input_grad: float = 0.0  # forward FLOPs of trained layers fed by the clip (no input gradient)

    @property
    def forward(self) -> float:
        return self.trained_forward + self.frozen_forward

    @property
    def backward(self) -> float:
        return 2.0 * self.trained_forward - self.no_input_grad

    @property
    def train_step(self) -> float:
        return self.forward + self.backward

    def scaled(self, factor: float) -> StepFlops:
        return StepFlops(self.trained_forward * factor, self.frozen_forward * factor, self.no_input_grad * factor)


MaskCounts = Sequence[tuple[float, float]]  # per mask: (n_ctx, n_pred) tokens per clip


def teacher_step_flops(encoder: EncoderSpec, decoder: DecoderSpec, *, n_tokens: int, patch_dim: int,
                       masks: MaskCounts) -> StepFlops:
    """Stage 1: per mask, the encoder over the context and the pixel decoder (output = patch_dim)."""
    total = 0.0
    for n_ctx, n_pred in masks:
        total += encoder_forward_flops(encoder, n_tokens=n_tokens, n_keep=n_ctx, patch_dim=patch_dim)
        total += decoder_forward_flops(decoder, in_dim=encoder.embed_dim, out_dim=patch_dim, n_ctx=n_ctx,
                                       n_pred=n_pred)
    return StepFlops(total, 0.0, len(masks) * linear_flops(n_tokens, patch_dim, encoder.embed_dim))


def student_step_flops(student: EncoderSpec, predictor: DecoderSpec, teacher: EncoderSpec | None, *,
                       target_dim: int, n_tokens: int, patch_dim: int, masks: MaskCounts) -> StepFlops:
    """Stage 2: the teacher once over the full clip (None: cached targets, free), then per mask the
    student over the context and the predictor (output = target_dim, the teacher's width)."""
    frozen = 0.0 if teacher is None else encoder_forward_flops(teacher, n_tokens=n_tokens, n_keep=n_tokens,
                                                               patch_dim=patch_dim)
    trained = 0.0
    for n_ctx, n_pred in masks:
        trained += encoder_forward_flops(student, n_tokens=n_tokens, n_keep=n_ctx, patch_dim=patch_dim)
        trained += decoder_forward_flops(predictor, in_dim=student.embed_dim, out_dim=target_dim, n_ctx=n_ctx,
                                         n_pred=n_pred)
    return StepFlops(trained, frozen, len(masks) * linear_flops(n_tokens, patch_dim, student.embed_dim))


def vjepa_step_flops(encoder: EncoderSpec, predictor: DecoderSpec, *, n_tokens: int, patch_dim: int,
                     masks: MaskCounts) -> StepFlops:
    """V-JEPA: as the student step, with the EMA target encoder (same size) as the frozen forward.
    The EMA update itself (~3 FLOPs per parameter) is not counted."""
    return student_step_flops(encoder, predictor, encoder, target_dim=encoder.embed_dim, n_tokens=n_tokens,
                              patch_dim=patch_dim, masks=masks)


def attentive_head_flops(dim: int, mlp_hidden: int, num_classes: int, *, n_tokens: int) -> float:
    """The attentive classifier: keys and values of every token, one query's attention and output
    projection, its MLP and the linear head."""
    return (linear_flops(n_tokens, dim, 2 * dim) + linear_flops(1, dim, dim) + 4.0 * n_tokens * dim
            + linear_flops(1, dim, dim) + 2 * linear_flops(1, dim, mlp_hidden) + linear_flops(1, dim, num_classes))


def supervised_step_flops(encoder: EncoderSpec, *, n_tokens: int, patch_dim: int, num_classes: int,
                          head_mlp_hidden: int) -> StepFlops:
    """The supervised ceiling: the encoder over every token of the whole clip, then the attentive head."""
    trained = (encoder_forward_flops(encoder, n_tokens=n_tokens, n_keep=n_tokens, patch_dim=patch_dim)
               + attentive_head_flops(encoder.embed_dim, head_mlp_hidden, num_classes, n_tokens=n_tokens))
    return StepFlops(trained, 0.0, linear_flops(n_tokens, patch_dim, encoder.embed_dim))


def mask_counts(masks: Sequence[MaskBatch]) -> list[tuple[float, float]]:
    """(n_ctx, n_pred) per mask of one collated batch (every sample in a MaskBatch has the same counts)."""
    return [(float(m.context_idx.shape[1]), float(m.pred_idx.shape[1])) for m in masks]
