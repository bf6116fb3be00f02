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

Two forms of each divergence, side by side: each is one :class:`Divergence` subclass with

* ``rows``: the value, out of place, differentiated by autograd w.r.t. both logits, any leading
  shape, ``-inf``-safe as above. :func:`divergence_loss` uses it, and the fused KD pass
  (:mod:`chunked`) on inputs with masked logits.
* ``rows_and_grad``: the same value and its closed-form gradient w.r.t. the student logits, in
  the fused pass's preallocated ``(n, V)`` buffers, finite inputs only. Autograd through ``rows``
  would keep up to 7 such tensors per chunk for ``jsd`` and allocate new ones on every chunk
  (``chunked.MASKED_BUFFERS`` is 16 where this needs 2 + ``n_scratch``): smaller chunks, page
  faults and a slower pass at ``V = 151,936``.

Both forms call the same primitives (``_log_mixture``, ``_kl_rows``, ``_tv_rows``): out of place
without buffers, in place with them. For ``D(q)``, ``q = softmax(z)``, the gradient is
``dD/dz = q (g - <q, g>)`` with ``g = dD/dq``; each class states its ``g`` and the tests compare
``rows_and_grad`` with autograd through ``rows`` in float64 for every entry. Row sums are
``(x * y).sum(-1)``, never a BLAS dot (``einsum``): PyTorch's sum accumulates in a cascade, a long
fp32 dot over 151,936 terms does not, and the divergences are small differences of large sums
(relative error 1e-4 in fp32 otherwise).

Reductions return :class:`LossSum` ``(sum, count)``: ``sum = sum_i w_i D_i`` over positions with
``w_i > 0`` and ``count`` = the number of such positions (int64). Summing sums and counts over
micro-batches and ranks, then dividing once, gives the exact global mean (what transformers 5
does with ``num_items_in_batch``); averaging per-batch means does not.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor


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


# ---- the divergences: each one class, its value and its analytic gradient side by side -----

# The primitives serve both forms. Without buffers (``rows``, autograd) they follow 0 log 0 = 0
# where logits are masked (-inf): such a column adds 0 to the value and 0 to the gradient, where
# a naive p * (log p - log q) is 0 * -inf = NaN; finite inputs pass the masks unchanged. With
# buffers (``rows_and_grad``, finite inputs) they run in place and mask nothing.


def _log_mixture(la: Tensor, wa: float, lb: Tensor, wb: float, *, out: Tensor | None = None) -> Tensor:
    """``log(wa exp(la) + wb exp(lb))`` for ``0 < wa, wb < 1``, in log space.

    Summing probabilities instead underflows: at low temperature a token whose ``exp(la)`` and
    ``exp(lb)`` are both below the smallest float gives ``m = 0``, ``log m = -inf`` and then
    ``0 * inf = NaN`` in the terms weighted by ``p`` or ``q``. With finite log-probs ``log m``
    is finite, every ``log(x / m)`` is bounded above by ``-log w``, and a term whose weight
    underflows to 0 adds exactly 0. Computed as ``log wb + logaddexp(la + log(wa / wb), lb)``:
    one shift (none for ``wa == wb``, JSD's default), one ``logaddexp`` and one shift back.

    Without ``out``: out of place, ``-inf`` where both terms are 0, with a 0 (not NaN) gradient
    (``logaddexp``'s is NaN at ``(-inf, -inf)``). With ``out`` (not ``la`` or ``lb``): in place.
    """
    empty = None
    if out is None:
        empty = (la == -math.inf) & (lb == -math.inf)
        la, lb = la.masked_fill(empty, 0.0), lb.masked_fill(empty, 0.0)
    m = la if wa == wb else torch.add(la, math.log(wa / wb), out=out)
    m = torch.add(torch.logaddexp(m, lb, out=out), math.log(wb), out=out)
    return m if empty is None else m.masked_fill(empty, -math.inf)


def _kl_rows(
    la: Tensor,
    lb: Tensor,
    *,
    prob: Tensor | None = None,
    diff: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``KL(a || b) = sum exp(la) (la - lb)`` over the last dim.

    Without buffers: out of place; a column with ``la == -inf`` adds exactly 0 (both inputs are
    filled with 0 there, so the product ``1 * 0`` and its gradient are finite). With buffers, in
    place: ``diff = la - lb``, ``prob = exp(la)``, ``out = prob * diff``. ``diff`` may be ``la``
    (the exp then runs first, into a spare ``prob``), or ``prob`` may be ``la`` or ``lb`` (the
    difference then runs first, into a spare ``diff``); ``out`` may be any buffer.
    """
    if prob is None:
        zero = la == -math.inf
        la, lb = la.masked_fill(zero, 0.0), lb.masked_fill(zero, 0.0)
    if diff is la:
        p = torch.exp(la, out=prob)
        d = torch.sub(la, lb, out=diff)
    else:
        d = torch.sub(la, lb, out=diff)
        p = torch.exp(la, out=prob)
    return torch.mul(p, d, out=out).sum(-1)


def _tv_rows(
    lq: Tensor, lp: Tensor, *, q: Tensor | None = None, diff: Tensor | None = None, sign: Tensor | None = None
) -> Tensor:
    """``0.5 sum |q - p|`` over the last dim, ``|x|`` as ``x sign(x)`` (the same value, and the
    same gradient ``sign(x)`` with ``sign(0) = 0`` as autograd's ``abs``; a cascaded sum, more
    exact than ``vector_norm``). With buffers: ``q = exp(lq)``, ``sign = sign(q - p)``, ``diff``
    (may be ``lp``) ``= |q - p|``.
    """
    x = torch.sub(torch.exp(lq, out=q), torch.exp(lp, out=diff), out=diff)
    return 0.5 * torch.mul(x, torch.sign(x, out=sign), out=diff).sum(-1)


def _through_softmax(qg: Tensor, q: Tensor, mean: Tensor) -> Tensor:
    """``dD/dz = q (g - <q, g>)`` for ``q = softmax(z)``, ``g = dD/dq``: ``qg`` holds ``q g`` and is
    overwritten with the result; ``mean`` ``(n,)`` is ``<q, g>``."""
    return qg.addcmul_(q, mean.neg().unsqueeze(-1))


Scratch = Sequence[Tensor]
ChunkResult = tuple[Tensor, Tensor, Tensor]


class Divergence(ABC):
    """One registry entry: a divergence's value per position and, beside it, the same value with
    its analytic gradient (see "Two forms" in the module docstring).

    ``rows(lq, lp, param)``: from student/teacher log-probs ``(..., V)`` -> ``(...)``,
    differentiable by autograd w.r.t. both, ``0 log 0 = 0`` at masked (``-inf``) tokens.

    ``rows_and_grad(lq, lp, scratch, param)``: for finite ``(n, V)`` log-probs, the same rows and
    their gradient w.r.t. the (temperature-scaled) student logits ``z``, in place: ``lq`` is read
    only (the caller reuses it for CE), ``lp`` and the first ``n_scratch`` buffers of ``scratch``
    (same shape and dtype) are overwritten. Returns ``(rows, grad, free)``: ``grad`` and ``free``
    are two distinct ones of those buffers, ``free`` for the caller to reuse. Working in place is
    the point: at ``V = 151,936`` each fp32 buffer of 128 rows is 78 MB, and allocating fresh ones
    every chunk costs page faults.

    ``param_name``: ``"beta"``, ``"alpha"`` or ``None``. ``endpoints``: parameter values at which
    the divergence *is* another entry (jsd at beta 0 and 1, the skews at alpha 0), computed as
    that entry in both forms (its own formulas assume weights strictly inside ``(0, 1)``).
    """

    name: ClassVar[str]
    n_scratch: ClassVar[int]
    param_name: ClassVar[str | None] = None
    endpoints: ClassVar[Mapping[float, str]] = {}

    def rows(self, lq: Tensor, lp: Tensor, param: float = 0.0) -> Tensor:
        return self._at(param)._rows(lq, lp, param)

    def rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, param: float = 0.0) -> ChunkResult:
        return self._at(param)._rows_and_grad(lq, lp, scratch, param)

    def _at(self, param: float) -> Divergence:
        plain = self.endpoints.get(param)
        return self if plain is None else DIVERGENCES[plain]

    @abstractmethod
    def _rows(self, lq: Tensor, lp: Tensor, param: float) -> Tensor: ...

    @abstractmethod
    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, param: float) -> ChunkResult: ...

    def __repr__(self) -> str:
        return f"DIVERGENCES[{self.name!r}]"


class _ForwardKL(Divergence):
    """``KL(p || q)``; ``dD/dz = q - p``."""

    name, n_scratch = "forward_kl", 1

    def _rows(self, lq: Tensor, lp: Tensor, param: float) -> Tensor:
        return _kl_rows(lp, lq)

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, param: float) -> ChunkResult:
        c = scratch[0]
        rows = _kl_rows(lp, lq, diff=c, prob=lp, out=c)  # lp = p
        return rows, torch.exp(lq, out=c).sub_(lp), lp


class _ReverseKL(Divergence):
    """``KL(q || p)``; ``dD/dz = q (log q - log p - D)``."""

    name, n_scratch = "reverse_kl", 1

    def _rows(self, lq: Tensor, lp: Tensor, param: float) -> Tensor:
        return _kl_rows(lq, lp)

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, param: float) -> ChunkResult:
        c = scratch[0]
        rows = _kl_rows(lq, lp, diff=c, prob=lp, out=c)  # lp = q, c = q (log q - log p)
        return rows, _through_softmax(c, lp, rows), lp


class _JSD(Divergence):
    """``beta KL(p || m) + (1 - beta) KL(q || m)``, ``m = beta p + (1 - beta) q``;
    ``dD/dz = (1 - beta) q (log q - log m - KL(q || m))``.

    ``dD/dq = (1 - beta) log(q / m)`` (the ``p / m`` and ``q / m`` terms cancel), hence the
    compact form. ``beta`` 0 and 1 are forward and reverse KL (TRL's convention).
    """

    name, n_scratch, param_name = "jsd", 2, "beta"
    endpoints = {0.0: "forward_kl", 1.0: "reverse_kl"}

    def _rows(self, lq: Tensor, lp: Tensor, beta: float) -> Tensor:
        lm = _log_mixture(lp, beta, lq, 1.0 - beta)
        return beta * _kl_rows(lp, lm) + (1.0 - beta) * _kl_rows(lq, lm)

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, beta: float) -> ChunkResult:
        c, d = scratch[0], scratch[1]
        lm = _log_mixture(lp, beta, lq, 1.0 - beta, out=c)
        kl_p = _kl_rows(lp, lm, diff=lp, prob=d, out=lp)
        kl_q = _kl_rows(lq, lm, diff=d, prob=c, out=d)  # c = q, d = q (log q - log m)
        grad = _through_softmax(d, c, kl_q).mul_(1.0 - beta)
        return beta * kl_p + (1.0 - beta) * kl_q, grad, lp


class _TotalVariation(Divergence):
    """``0.5 sum |q - p|``; ``g = 0.5 sign(q - p)``."""

    name, n_scratch = "total_variation", 2

    def _rows(self, lq: Tensor, lp: Tensor, param: float) -> Tensor:
        return _tv_rows(lq, lp)

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, param: float) -> ChunkResult:
        c, d = scratch[0], scratch[1]
        rows = _tv_rows(lq, lp, q=c, diff=lp, sign=d)
        qg = d.mul_(c)  # q sign(q - p)
        return rows, _through_softmax(qg, c, qg.sum(-1)).mul_(0.5), lp


class _SkewKL(Divergence):
    """``KL(p || m)``, ``m = alpha p + (1 - alpha) q``; ``g = -(1 - alpha) p / m``.

    ``alpha`` 0 is forward KL exactly (``m = q``; ``p / q`` itself could overflow where ``q``
    underflows).
    """

    name, n_scratch, param_name = "skew_kl", 2, "alpha"
    endpoints = {0.0: "forward_kl"}

    def _rows(self, lq: Tensor, lp: Tensor, alpha: float) -> Tensor:
        return _kl_rows(lp, _log_mixture(lp, alpha, lq, 1.0 - alpha))

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, alpha: float) -> ChunkResult:
        c, d = scratch[0], scratch[1]
        lm = _log_mixture(lp, alpha, lq, 1.0 - alpha, out=c)
        rows = _kl_rows(lp, lm, diff=lp, prob=d, out=d)  # lp = log p - log m (<= -log alpha)
        p_m = lp.exp_()  # p / m, at most 1 / alpha
        q = torch.exp(lq, out=c)
        qg = torch.mul(q, p_m, out=d)  # up to the factor -(1 - alpha)
        return rows, _through_softmax(qg, q, qg.sum(-1)).mul_(-(1.0 - alpha)), lp


class _SkewReverseKL(Divergence):
    """``KL(q || m)``, ``m = (1 - alpha) p + alpha q``;
    ``dD/dz = q (log q - log m - D - alpha (q/m - <q, q/m>))``.

    ``alpha`` 0 is reverse KL exactly (``m = p``; ``q^2 / p`` could overflow where ``p`` underflows).
    """

    name, n_scratch, param_name = "skew_reverse_kl", 2, "alpha"
    endpoints = {0.0: "reverse_kl"}

    def _rows(self, lq: Tensor, lp: Tensor, alpha: float) -> Tensor:
        return _kl_rows(lq, _log_mixture(lp, 1.0 - alpha, lq, alpha))

    def _rows_and_grad(self, lq: Tensor, lp: Tensor, scratch: Scratch, alpha: float) -> ChunkResult:
        c, d = scratch[0], scratch[1]
        lm = _log_mixture(lp, 1.0 - alpha, lq, alpha, out=c)
        # lp = log q - log m (<= -log alpha), c = q, d = q (log q - log m)
        rows = _kl_rows(lq, lm, diff=lp, prob=c, out=d)
        q2_m = torch.add(lp, lq, out=lp).exp_()  # q^2 / m = exp(2 log q - log m), at most q / alpha
        qg = d.add_(q2_m, alpha=-alpha)  # q (log q - log m - alpha q / m)
        return rows, _through_softmax(qg, c, rows - alpha * q2_m.sum(-1)), lp


DIVERGENCES: dict[str, Divergence] = {
    d.name: d for d in (_ForwardKL(), _ReverseKL(), _JSD(), _TotalVariation(), _SkewKL(), _SkewReverseKL())
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
