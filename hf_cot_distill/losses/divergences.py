"""Token-level divergences between a teacher and a student next-token distribution.

Every divergence here is the *true* divergence, never the cross-entropy ``-sum p_T log p_S``
that some reference code reports (that equals forward KL plus the teacher entropy: same
gradient for the student, a different value). Notation, per position, over the vocabulary:
``p`` = teacher distribution, ``q`` = student distribution, both ``softmax(logits / T)``.

============================  =======================================================
name                          value per position
============================  =======================================================
``forward_kl``                ``KL(p || q) = sum p (log p - log q)``
``reverse_kl``                ``KL(q || p) = sum q (log q - log p)``
``jsd`` (``beta``)            ``beta KL(p || m) + (1 - beta) KL(q || m)``,
                              ``m = beta p + (1 - beta) q`` (TRL GKD convention); at
                              ``beta == 0`` exactly: ``KL(p || q)`` (forward KL), at
                              ``beta == 1`` exactly: ``KL(q || p)`` (reverse KL), as TRL
                              does. These endpoints are the limits of ``jsd / beta`` as
                              ``beta -> 0`` and ``jsd / (1 - beta)`` as ``beta -> 1``; the
                              unscaled generalized JSD itself tends to 0 at both ends.
``total_variation``           ``0.5 sum |p - q|``
``skew_kl`` (``alpha``)       ``KL(p || alpha p + (1 - alpha) q)`` (DistiLLM); alpha=0 is
                              forward KL
``skew_reverse_kl`` (alpha)   ``KL(q || (1 - alpha) p + alpha q)`` (DistiLLM); alpha=0 is
                              reverse KL
============================  =======================================================

Temperature ``T`` divides both logits before the softmax; with
``scale_by_temperature_squared=True`` the value (and so the gradient) is multiplied by ``T**2``
(Hinton et al., 2015), which keeps gradient magnitudes comparable across temperatures.

Masked logits (``-inf``, e.g. a vocabulary mask) are probability 0 and follow ``0 log 0 = 0``:
values and gradients stay finite, except where one side has mass on a token the other side
masks and the divergence weighs that token by the first side's log-ratio (reverse KL with a
teacher-masked token, forward KL with a student-masked one): that is ``+inf``, the true value.

Reductions return :class:`LossSum` ``(sum, count)``: ``sum = sum_i w_i D_i`` over positions with
``w_i > 0`` and ``count`` = the number of such positions (int64). Summing sums and counts over
micro-batches and ranks, then dividing once, gives the exact global mean (what transformers 5
does with ``num_items_in_batch``); averaging per-batch means does not.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from hf_cot_distill.losses import divergence_grads as _grads


class LossSum(NamedTuple):
    """A reduction kept as ``(sum, count)`` so normalisation can happen once, globally.

    ``sum``: scalar float tensor (fp32, or fp64 for fp64 inputs), differentiable.
    ``count``: scalar ``torch.long`` tensor, the number of positions that entered ``sum``.
    """

    sum: Tensor
    count: Tensor

    def mean(self) -> Tensor:
        """``sum / count``; 0 (not NaN) when nothing was selected."""
        return self.sum / self.count.clamp(min=1).to(self.sum.dtype)


def merge_loss_sums(parts: Sequence[LossSum]) -> LossSum:
    """Add sums and counts of several reductions (micro-batches, ranks, sections)."""
    if not parts:
        raise ValueError("parts: got an empty sequence; pass at least one LossSum.")
    return LossSum(torch.stack([p.sum for p in parts]).sum(), torch.stack([p.count for p in parts]).sum())


# ---- per-row math on log-probs (autograd-friendly); vocabulary on the last dim ------------


def _log(x: float) -> float:
    # log(0) = -inf is the right value here: logaddexp(-inf, y) == y drops that mixture term.
    return math.log(x) if x > 0 else -math.inf


# Masked logits (-inf, e.g. a vocabulary mask) give probabilities that are exactly 0. Every
# term below follows 0 log 0 = 0: a column where the weighting distribution is 0 adds 0 to the
# value and 0 to the gradient, so finite divergences stay finite (a naive p * (log p - log q)
# is 0 * -inf = NaN there). Finite inputs pass through the masks unchanged.


def _kl_rows(la: Tensor, lb: Tensor) -> Tensor:
    """``sum exp(la) (la - lb)`` over the last dim, a column with ``la == -inf`` adding exactly 0."""
    zero = la == -math.inf
    # Both inputs are filled with 0 there, so the product (1 * 0) and its gradient are finite.
    la0, lb0 = la.masked_fill(zero, 0.0), lb.masked_fill(zero, 0.0)
    return (la0.exp() * (la0 - lb0)).sum(-1)


def _log_mixture(la: Tensor, wa: float, lb: Tensor, wb: float) -> Tensor:
    """``log(wa exp(la) + wb exp(lb))``; ``-inf`` where both terms are 0, with a 0 (not NaN) gradient."""
    a, b = la + _log(wa), lb + _log(wb)
    empty = (a == -math.inf) & (b == -math.inf)  # logaddexp's gradient is NaN at (-inf, -inf)
    return torch.logaddexp(a.masked_fill(empty, 0.0), b.masked_fill(empty, 0.0)).masked_fill(empty, -math.inf)


def _forward_kl_rows(lq: Tensor, lp: Tensor, param: float) -> Tensor:
    return _kl_rows(lp, lq)


def _reverse_kl_rows(lq: Tensor, lp: Tensor, param: float) -> Tensor:
    return _kl_rows(lq, lp)


def _jsd_rows(lq: Tensor, lp: Tensor, beta: float) -> Tensor:
    if beta == 0.0:
        return _forward_kl_rows(lq, lp, beta)
    if beta == 1.0:
        return _reverse_kl_rows(lq, lp, beta)
    lm = _log_mixture(lp, beta, lq, 1.0 - beta)
    return beta * _kl_rows(lp, lm) + (1.0 - beta) * _kl_rows(lq, lm)


def _total_variation_rows(lq: Tensor, lp: Tensor, param: float) -> Tensor:
    return 0.5 * (lq.exp() - lp.exp()).abs().sum(-1)


def _skew_kl_rows(lq: Tensor, lp: Tensor, alpha: float) -> Tensor:
    return _kl_rows(lp, _log_mixture(lp, alpha, lq, 1.0 - alpha))


def _skew_reverse_kl_rows(lq: Tensor, lp: Tensor, alpha: float) -> Tensor:
    return _kl_rows(lq, _log_mixture(lp, 1.0 - alpha, lq, alpha))


RowFn = Callable[[Tensor, Tensor, float], Tensor]


@dataclass(frozen=True)
class Divergence:
    """One registry entry.

    ``rows(lq, lp, param)``: per-position value from student/teacher log-probs ``(N, V)`` -> ``(N,)``,
    differentiable by autograd. ``rows_and_grad``: the same value plus its analytic gradient with
    respect to the (temperature-scaled) student logits, computed in place in preallocated
    buffers (see :mod:`divergence_grads`); ``n_scratch`` buffers of the chunk's shape it needs.
    ``param_name``: ``"beta"``, ``"alpha"`` or ``None``.
    """

    name: str
    rows: RowFn
    rows_and_grad: _grads.ChunkGradFn
    n_scratch: int
    param_name: str | None = None


DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": Divergence("forward_kl", _forward_kl_rows, _grads.forward_kl, 1),
    "reverse_kl": Divergence("reverse_kl", _reverse_kl_rows, _grads.reverse_kl, 1),
    "jsd": Divergence("jsd", _jsd_rows, _grads.jsd, 2, "beta"),
    "total_variation": Divergence("total_variation", _total_variation_rows, _grads.total_variation, 2),
    "skew_kl": Divergence("skew_kl", _skew_kl_rows, _grads.skew_kl, 2, "alpha"),
    "skew_reverse_kl": Divergence(
        "skew_reverse_kl", _skew_reverse_kl_rows, _grads.skew_reverse_kl, 2, "alpha"
    ),
}
"""Registry by name. Parametrised entries read ``beta`` (jsd) or ``alpha`` (skew_*)."""


def _real(value: object) -> float | None:
    """``value`` as a float when it is one real number: int, float, numpy scalar, 0-d array or
    tensor (not a bool); ``None`` otherwise."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # numpy scalar, 0-d ndarray, 0-d torch.Tensor
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def resolve_divergence(
    name: str, *, temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1
) -> tuple[Divergence, float]:
    """Look up ``name`` and validate its hyper-parameters; returns ``(entry, param)``.

    Numbers may be any real scalar (``int``, ``float``, numpy scalars, 0-d arrays and tensors).
    Raises ``ValueError`` for an unknown name (listing the valid ones), ``temperature <= 0`` or
    non-finite, ``beta`` outside ``[0, 1]``, ``alpha`` outside ``[0, 1)``, and for anything that
    is not one real number (a bool, a string, a tensor of several values).
    """
    if name not in DIVERGENCES:
        raise ValueError(f"divergence: unknown name {name!r}; choose one of {sorted(DIVERGENCES)}.")
    t = _real(temperature)
    if t is None or not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature: got {temperature!r}; use a finite number > 0 (1.0 = no change).")
    entry = DIVERGENCES[name]
    if entry.param_name == "beta":
        b = _real(beta)
        if b is None or not 0.0 <= b <= 1.0:
            raise ValueError(f"beta: got {beta!r} for 'jsd'; use a number in [0, 1] (0.5 = symmetric JSD).")
        return entry, b
    if entry.param_name == "alpha":
        a = _real(alpha)
        if a is None or not 0.0 <= a < 1.0:
            raise ValueError(
                f"alpha: got {alpha!r} for {name!r}; use a number in [0, 1) "
                "(alpha = 1 makes the divergence identically 0; DistiLLM uses 0.1)."
            )
        return entry, a
    return entry, 0.0


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, weights: Tensor | None) -> None:
    for field, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{field}: expected a torch.Tensor, got {type(t).__name__}.")
        if not t.is_floating_point() or t.dim() < 1:
            raise TypeError(
                f"{field}: expected a floating tensor of shape (..., V), got {t.dtype} {tuple(t.shape)}."
            )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_logits: shape {tuple(teacher_logits.shape)} != student_logits {tuple(student_logits.shape)}; "
            "slice both to the real vocabulary (logits[..., :vocab_size]) and align positions."
        )
    if weights is not None:
        check_weights("weights", weights, tuple(student_logits.shape[:-1]))


def check_weights(field: str, weights: Tensor, shape: tuple[int, ...]) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``weights`` is a finite, non-negative float tensor of ``shape``."""
    if not isinstance(weights, Tensor) or not weights.is_floating_point():
        raise TypeError(f"{field}: expected a floating torch.Tensor of shape {shape}, got {weights!r:.80}.")
    if tuple(weights.shape) != shape:
        raise ValueError(f"{field}: shape {tuple(weights.shape)} does not match the positions {shape}.")
    if weights.numel():
        if not bool(torch.isfinite(weights).all()):
            raise ValueError(f"{field}: contains NaN or inf; use finite weights (0 = not supervised).")
        if bool((weights < 0).any()):
            raise ValueError(
                f"{field}: min {weights.min().item()} < 0; weights must be >= 0 (0 = not supervised)."
            )


def per_token_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: str = "forward_kl",
    *,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> Tensor:
    """Divergence at every position.

    Args: ``student_logits``, ``teacher_logits``: ``(..., V)`` float tensors (any float dtype;
    computed in at least fp32). Returns ``(...)`` in the compute dtype, differentiable w.r.t.
    both logits.
    """
    _check_logits(student_logits, teacher_logits, None)
    entry, param = resolve_divergence(divergence, temperature=temperature, beta=beta, alpha=alpha)
    temperature = float(temperature)  # validated: one real number (numpy scalar, 0-d tensor ...)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    lq = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    lp = torch.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    rows = entry.rows(lq, lp, param)
    return rows * temperature**2 if scale_by_temperature_squared else rows


def divergence_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: str = "forward_kl",
    *,
    weights: Tensor | None = None,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> LossSum:
    """Weighted ``(sum, count)`` of a divergence over positions whose weight is > 0.

    Args:
        student_logits, teacher_logits: ``(..., V)`` float tensors, same shape.
        divergence: a key of :data:`DIVERGENCES`.
        weights: ``(...)`` finite, non-negative float weights; ``None`` = 1 everywhere.
            Only positions with weight > 0 are computed (the rest cost nothing).
        temperature, scale_by_temperature_squared, beta, alpha: see the module docstring.

    Returns:
        :class:`LossSum` with ``sum`` (fp32/fp64 scalar, differentiable) and ``count`` (int64).
    """
    _check_logits(student_logits, teacher_logits, weights)
    resolve_divergence(divergence, temperature=temperature, beta=beta, alpha=alpha)
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab)
    t = teacher_logits.reshape(-1, vocab)
    if weights is not None:
        w = weights.reshape(-1)
        idx = torch.nonzero(w > 0).squeeze(1)
        s, t, w = s.index_select(0, idx), t.index_select(0, idx), w.index_select(0, idx)
    rows = per_token_divergence(
        s, t, divergence, temperature=temperature,
        scale_by_temperature_squared=scale_by_temperature_squared, beta=beta, alpha=alpha,
    )  # fmt: skip
    total = (rows * w.to(rows.dtype)).sum() if weights is not None else rows.sum()
    return LossSum(total, torch.tensor(rows.shape[0], dtype=torch.long, device=rows.device))


def _named(name: str) -> Callable[..., LossSum]:
    def loss(
        student_logits: Tensor,
        teacher_logits: Tensor,
        *,
        weights: Tensor | None = None,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        **params: float,
    ) -> LossSum:
        return divergence_loss(
            student_logits, teacher_logits, name, weights=weights, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, **params,
        )  # fmt: skip

    loss.__name__ = name
    loss.__doc__ = f"``divergence_loss(..., divergence={name!r})``; see :func:`divergence_loss`."
    return loss


forward_kl = _named("forward_kl")
reverse_kl = _named("reverse_kl")
jsd = _named("jsd")
total_variation = _named("total_variation")
skew_kl = _named("skew_kl")
skew_reverse_kl = _named("skew_reverse_kl")
