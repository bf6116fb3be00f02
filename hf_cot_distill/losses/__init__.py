"""KD losses: divergences as pure tensor functions and a memory-bounded fused KD from hidden states
(against a teacher's logits or a teacher cache's sparse targets)."""

from hf_cot_distill.losses.cached import CACHE_MODES, CachedTargets
from hf_cot_distill.losses.chunked import (
    FusedKDOutput,
    FusedLinearKDFunction,
    default_chunk_size,
    fused_cached_kd,
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
    "CACHE_MODES",
    "DIVERGENCES",
    "CachedTargets",
    "Divergence",
    "FusedKDOutput",
    "FusedLinearKDFunction",
    "LossSum",
    "default_chunk_size",
    "divergence_loss",
    "forward_kl",
    "fused_cached_kd",
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
