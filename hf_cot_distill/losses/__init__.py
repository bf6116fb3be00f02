"""KD losses: divergences as pure tensor functions and a memory-bounded fused KD from hidden states."""

from hf_cot_distill.losses.chunked import (
    FusedKDOutput,
    FusedLinearKDFunction,
    default_chunk_size,
    fused_linear_kd,
    gather_zero3,
    zero3_partitioned,
)
from hf_cot_distill.losses.divergences import (
    DIVERGENCES,
    Divergence,
    LossSum,
    divergence_loss,
    forward_kl,
    jsd,
    merge_loss_sums,
    per_token_divergence,
    resolve_divergence,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    total_variation,
)

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "FusedKDOutput",
    "FusedLinearKDFunction",
    "LossSum",
    "default_chunk_size",
    "divergence_loss",
    "forward_kl",
    "fused_linear_kd",
    "gather_zero3",
    "jsd",
    "merge_loss_sums",
    "per_token_divergence",
    "resolve_divergence",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "total_variation",
    "zero3_partitioned",
]
