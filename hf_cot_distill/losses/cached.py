"""Forward KL against a *cached* teacher: sparse targets per position instead of teacher logits.

A teacher cache stores, per supervised position, a few token ids of the teacher's distribution
``p`` (at the cache temperature ``T``) instead of its ``V`` logits. Two kinds of targets:

``sampled`` (RS-KD, Anshumann et al. 2025)
    ``S`` ids drawn i.i.d. from ``p``, stored as the distinct ids ``x_j`` with their counts
    ``c_j`` (``w_j = c_j / S``, ``sum_j w_j = 1``) and the teacher's entropy ``H(p)``. The
    loss ``-sum_j w_j log q(x_j)`` is an unbiased estimate of the cross-entropy ``H(p, q)``, so
    its gradient w.r.t. the student logits ``z`` (at ``T``),
    ``(1/T) (q - sum_j w_j e_{x_j})``, is an **unbiased** estimate of the forward-KL gradient
    ``(1/T) (q - p)``; ``KL_hat = -sum_j w_j log q(x_j) - H(p)`` estimates the value (the same
    estimate of ``KL(p || q)`` up to the exact constant ``H(p)``).

``topk``
    the ``K`` most likely ids with their probabilities ``p_k`` and the tail mass
    ``p_tail = 1 - sum_k p_k``. The loss is the exact KL between the ``K + 1``-bucket
    coarsenings of ``p`` and ``q`` (the top-K tokens and one tail bucket), never a renormalised
    top-K (which silently moves the tail mass onto the top-K: biased, see
    :func:`topk_renormalised_rows_and_grad`, kept as the reference the tests refute). Its
    gradient is ``q_i - p_i`` on the top-K and ``q_i (1 - p_tail / q_tail)`` elsewhere: the tail
    mass is spread like the student's own tail.

The per-chunk functions here see the student's log-probabilities ``lq = log_softmax(z / T)`` of a
chunk of ``m`` positions (``(m, V)``) and the targets of the same positions (``(m, K)``, id ``-1``
= padding with weight 0), and return the per-position values and write ``dD/dz`` into a
buffer; :mod:`hf_cot_distill.losses.chunked` owns chunking, CE, weights, temperature and the chain
rule through the lm_head, as for a dense teacher. The builders turn teacher log-probs into
targets at cache time: :func:`sampled_chunk_targets` / :func:`topk_chunk_targets` work in place on
one chunk of positions (a fixed ``(m, V)`` buffer or two, whatever the row length);
:func:`sample_targets`, :func:`entropy` and :func:`topk_targets` are the plain reference forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

CACHE_MODES: tuple[str, ...] = ("sampled", "topk")
PAD_ID = -1


@dataclass(frozen=True)
class CachedTargets:
    """Teacher targets for ``N`` positions (the leading dims of the student hidden states, flat).

    Attributes:
        mode: ``"sampled"`` or ``"topk"``.
        ids: ``(N, K)`` int64 token ids, ``-1`` where a position has fewer than ``K`` (and the
            whole row ``-1`` at a position the cache does not cover).
        weights: ``(N, K)`` float: ``count / S`` (sampled) or the teacher probability (topk);
            0 at padding.
        entropy: ``(N,)`` float, sampled mode: the teacher entropy ``H(p)`` in nats (the KL
            value's constant); ``None`` in topk mode.
        tail_logmass: ``(N,)`` float, topk mode: ``log(1 - sum_k p_k)`` (``-inf`` when the
            top-K hold all the mass); ``None`` in sampled mode.
        temperature: the cache temperature ``T`` the targets were drawn at; the loss must use it.
    """

    mode: str
    ids: Tensor
    weights: Tensor
    entropy: Tensor | None = None
    tail_logmass: Tensor | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise ValueError(f"mode={self.mode!r}: must be one of {CACHE_MODES}; fix: use one of them.")
        if self.ids.dim() != 2 or self.weights.shape != self.ids.shape:
            raise ValueError(
                f"ids {tuple(self.ids.shape)} / weights {tuple(self.weights.shape)}: must both be (N, K); "
                "fix: one row of K targets per position."
            )
        if self.ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ids: dtype {self.ids.dtype} must be an integer type; fix: int32 or int64 ids.")
        need, other = ("entropy", "tail_logmass") if self.mode == "sampled" else ("tail_logmass", "entropy")
        for name, required in ((need, True), (other, False)):
            value = getattr(self, name)
            if (value is not None) != required:
                raise ValueError(
                    f"{name}: {'required' if required else 'not used'} in {self.mode} mode; fix: "
                    f"{'pass' if required else 'drop'} it."
                )
            if value is not None and value.shape != self.ids.shape[:1]:
                raise ValueError(f"{name}: shape {tuple(value.shape)} must be ({self.ids.shape[0]},).")
        if not (
            isinstance(self.temperature, (int, float))
            and math.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise ValueError(f"temperature={self.temperature!r}: must be a finite number > 0.")

    @property
    def covered(self) -> Tensor:
        """``(N,)`` bool: positions that hold at least one target."""
        return (self.ids >= 0).any(1)

    def rows(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(ids, weights, valid, extra)`` of positions ``idx`` (ids clamped to 0 at padding,
        weights 0 there); ``extra`` is the entropy (sampled) or the tail log-mass (topk)."""
        ids = self.ids.index_select(0, idx).long()
        valid = ids >= 0
        weights = torch.where(valid, self.weights.index_select(0, idx), 0)
        extra = self.entropy if self.mode == "sampled" else self.tail_logmass
        return ids.clamp(min=0), weights, valid, None if extra is None else extra.index_select(0, idx)


def sampled_rows_and_grad(lq: Tensor, ids: Tensor, weights: Tensor, entropy: Tensor, grad: Tensor) -> Tensor:
    """Sampled targets: ``KL_hat`` per position and ``dKL_hat/dz`` (``z`` = logits / T) in ``grad``.

    ``lq``: ``(m, V)`` student log-probs; ``ids``/``weights``: ``(m, K)`` (weights sum to 1 per
    position, 0 at padding); ``entropy``: ``(m,)``; ``grad``: ``(m, V)`` output (may be ``lq``:
    then ``lq`` is consumed). Returns ``(m,)``.
    """
    rows = -(weights * lq.gather(1, ids)).sum(1) - entropy.to(lq.dtype)
    total = weights.sum(1, keepdim=True)
    if grad is lq:
        grad.exp_().mul_(total)
    else:
        torch.exp(lq, out=grad).mul_(total)
    grad.scatter_add_(1, ids, -weights.to(grad.dtype))
    return rows


def topk_rows_and_grad(
    lq: Tensor, ids: Tensor, probs: Tensor, valid: Tensor, tail_logmass: Tensor, grad: Tensor, scratch: Tensor
) -> Tensor:
    """Top-K targets with a tail bucket: the exact ``(K+1)``-bucket KL per position and its
    gradient w.r.t. ``z`` in ``grad``. ``probs``: ``(m, K)`` teacher probabilities (0 at padding),
    ``valid``: ``(m, K)`` bool (every row has at least one real id), ``tail_logmass``: ``(m,)``.
    ``scratch``: an ``(m, V)`` work buffer (the student's tail log-mass is a log-sum-exp over the
    non-top-K tokens). ``0 log 0 = 0`` on both terms. ``grad`` must not be ``lq``."""
    lq_k = lq.gather(1, ids)
    # log q_tail: log-sum-exp of lq over the tokens outside the top-K (stable when q_tail is tiny).
    # Padding slots repeat the row's first real id, so they mask nothing else.
    first_real = ids.gather(1, valid.to(torch.uint8).argmax(1, keepdim=True))
    scratch.copy_(lq).scatter_(1, torch.where(valid, ids, first_real), -math.inf)
    log_q_tail = torch.logsumexp(scratch, 1)
    p_tail = tail_logmass.to(lq.dtype).exp()
    log_p = torch.where(probs > 0, probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), 0).to(lq.dtype)
    rows = (probs.to(lq.dtype) * (log_p - lq_k)).sum(1)
    rows = rows + torch.where(p_tail > 0, p_tail * (tail_logmass.to(lq.dtype) - log_q_tail), 0)
    # grad = q - p on the top-K, q (1 - p_tail / q_tail) elsewhere
    factor = torch.where(p_tail > 0, p_tail * torch.exp(-log_q_tail), 0).unsqueeze(1)
    q_k = lq_k.exp() * valid
    torch.exp(lq, out=grad)
    grad.mul_(1 - factor)
    grad.scatter_add_(1, ids, ((q_k * factor) - probs.to(grad.dtype) * valid).to(grad.dtype))
    return rows


def topk_renormalised_rows_and_grad(lq: Tensor, ids: Tensor, probs: Tensor, grad: Tensor) -> Tensor:
    """Top-K renormalised to sum to 1 (no tail bucket), as peer caches do: ``KL(p_K / sum p_K || q)``
    restricted to the top-K. A **biased** estimate of the forward KL and its gradient (the tail mass
    is silently moved onto the top-K); here only as the reference the tests and B8 compare against."""
    p = probs / probs.sum(1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    log_p = torch.where(p > 0, p.clamp_min(torch.finfo(p.dtype).tiny).log(), 0)
    rows = (p * (log_p - lq.gather(1, ids))).sum(1)
    torch.exp(lq, out=grad)
    grad.scatter_add_(1, ids, -p.to(grad.dtype))
    return rows


# ---------------------------------------------------------------------------------------------
# Builders: teacher log-probs -> targets (at cache time)
# ---------------------------------------------------------------------------------------------


def _group_draws(drawn: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(m, samples)`` drawn ids -> ``(ids, counts, n_unique)`` as :func:`sample_targets` returns them."""
    m = drawn.shape[0]
    drawn, _ = drawn.sort(1)
    first = torch.ones_like(drawn, dtype=torch.bool)
    first[:, 1:] = drawn[:, 1:] != drawn[:, :-1]
    group = first.long().cumsum(1) - 1
    ids = torch.full((m, samples), PAD_ID, dtype=torch.long, device=drawn.device).scatter_(1, group, drawn)
    counts = torch.zeros((m, samples), dtype=torch.long, device=drawn.device).scatter_add_(
        1, group, torch.ones_like(drawn)
    )
    return ids, counts, first.sum(1)


def sample_targets(
    logp: Tensor, samples: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``samples`` ids per row from ``exp(logp)`` (``(m, V)`` teacher log-probs at the cache
    temperature), with replacement. Returns ``(ids, counts, n_unique)``: ``(m, samples)`` int64
    distinct ids in increasing order then ``-1``, ``(m, samples)`` int64 counts (0 at padding),
    ``(m,)`` int64 number of distinct ids. Deterministic for a given ``generator`` state.

    The reference form (one ``(m, V)`` temporary); the cache build uses :func:`sampled_chunk_targets`
    on chunks of positions, which draws the same ids from the same generator state."""
    drawn = torch.multinomial(logp.float().exp(), samples, replacement=True, generator=generator)
    return _group_draws(drawn, samples)


def entropy(logp: Tensor) -> Tensor:
    """Entropy ``-sum p log p`` in nats over the last dim of log-probs (``0 log 0 = 0``)."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0).sum(-1)


def sampled_chunk_targets(
    logp: Tensor, samples: int, generator: torch.Generator | None, scratch: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`sample_targets` and :func:`entropy` of a chunk of ``(m, V)`` float32 log-probs in one
    ``exp`` pass and no ``(m, V)`` allocation: ``scratch`` (``(m, V)``, same dtype and device) gets
    ``p = exp(logp)``, the draws are taken from it, then it is overwritten with ``p log p``.
    Returns ``(ids, counts, n_unique, entropy)``; ``logp`` is only read.

    Same values as the reference functions on the same rows: the same kernels see the same
    numbers (``multinomial`` draws row after row from ``generator``, so drawing a row's positions
    chunk by chunk consumes the generator exactly as one call over the whole row does)."""
    torch.exp(logp, out=scratch)
    drawn = torch.multinomial(scratch, samples, replacement=True, generator=generator)
    ids, counts, n = _group_draws(drawn, samples)
    ent = -scratch.mul_(logp).sum(1)
    bad = torch.isnan(ent)  # 0 * -inf: a token the teacher gives no mass at all (an -inf logit)
    if bool(bad.any()):
        ent[bad] = entropy(logp[bad])
    return ids, counts, n, ent


def topk_targets(logp: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` most likely ids of each row of ``(m, V)`` log-probs: ``(ids, logprobs, tail_logmass)``,
    ``(m, k)`` int64, ``(m, k)`` and ``(m,)`` in ``logp``'s dtype; ``tail_logmass = log(1 - sum p_k)``
    computed as a log-sum-exp over the other tokens (``-inf`` when ``k == V``). ``logp`` is kept
    (the cache build uses :func:`topk_chunk_targets`, which reuses it)."""
    return topk_chunk_targets(logp.clone(), k)


def topk_chunk_targets(logp: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`topk_targets` that overwrites ``logp`` (its top-K entries become ``-inf``) instead of
    copying it: the cache build's form, one ``(m, V)`` buffer per chunk."""
    values, ids = logp.topk(k, dim=1)
    logp.scatter_(1, ids, -math.inf)
    return ids, values, torch.logsumexp(logp, 1)
