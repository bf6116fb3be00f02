"""Per-chunk divergence math with analytic student-logit gradients, in preallocated buffers.

The fused KD pass (:mod:`chunked`) calls one of these per chunk of positions. Each function
receives, for ``n`` positions and vocabulary ``V`` (all ``(n, V)``, same float dtype):

* ``lq``: student log-probs ``log softmax(s / T)``. **Read only** (the caller reuses it for CE).
* ``lp``: teacher log-probs ``log softmax(t / T)``. May be overwritten.
* ``scratch``: work buffers (as many as the registry's ``n_scratch``). May be overwritten.

and returns ``(rows, grad, free)``: ``rows`` ``(n,)`` the divergence per position, ``grad``
``(n, V)`` its gradient w.r.t. ``z = s / T`` (one of the given buffers), ``free`` another
buffer the caller may use. Working in place is the point: at ``V = 151,936`` each ``(n, V)``
fp32 buffer of 128 rows is 78 MB, and allocating fresh ones every chunk costs page faults.

For ``D(q)`` with ``q = softmax(z)`` the gradient is ``dD/dz = q * (g - <q, g>)`` where
``g = dD/dq``; the formulas below are that identity worked out per divergence (the tests
compare each against autograd in float64).

Row sums are always ``(x * y).sum(1)`` into a spare buffer, never a BLAS dot (``einsum``):
PyTorch's sum accumulates in a cascade, a long fp32 dot over 151,936 terms does not, and
the divergences are small differences of large sums (relative error 1e-4 in fp32 otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

ChunkGradFn = Callable[[Tensor, Tensor, Sequence[Tensor], float], tuple[Tensor, Tensor, Tensor]]


def _neg_col(rows: Tensor) -> Tensor:
    return rows.neg().unsqueeze(1)


def _log_mixture(la: Tensor, wa: float, lb: Tensor, wb: float, *, out: Tensor) -> Tensor:
    """``out = log(wa exp(la) + wb exp(lb))`` for ``0 < wa, wb < 1``, in log space.

    Summing probabilities instead underflows: at low temperature a token whose ``exp(la)`` and
    ``exp(lb)`` are both below the smallest float gives ``m = 0``, ``log m = -inf`` and then
    ``0 * inf = NaN`` in the terms weighted by ``p`` or ``q``. With finite log-probs ``log m``
    is finite, every ``log(x / m)`` is bounded above by ``-log w``, and a term whose weight
    underflows to 0 adds exactly 0. Computed as ``log wb + logaddexp(la + log(wa / wb), lb)``:
    one shift (none for ``wa == wb``, JSD's default), one ``logaddexp`` and one shift back, all
    in ``out`` (which must not be ``la`` or ``lb``).
    """
    if wa == wb:
        torch.logaddexp(la, lb, out=out)
    else:
        torch.add(la, math.log(wa / wb), out=out)
        torch.logaddexp(out, lb, out=out)
    return out.add_(math.log(wb))


def forward_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(p || q)``; ``dD/dz = q - p``."""
    c = scratch[0]
    torch.sub(lp, lq, out=c)  # log p - log q
    lp.exp_()  # p (teacher log-probs are no longer needed)
    rows = c.mul_(lp).sum(1)
    torch.exp(lq, out=c).sub_(lp)
    return rows, c, lp


def reverse_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(q || p)``; ``dD/dz = q (log q - log p - D)``."""
    c = scratch[0]
    torch.sub(lq, lp, out=c)
    torch.exp(lq, out=lp)  # q
    rows = c.mul_(lp).sum(1)  # c = q (log q - log p)
    c.addcmul_(lp, _neg_col(rows))
    return rows, c, lp


def jsd(lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Generalized JSD, ``m = beta p + (1 - beta) q``; ``dD/dz = (1 - beta) q (log q - log m - KL(q || m))``.

    ``dD/dq = (1 - beta) log(q / m)`` (the ``p / m`` and ``q / m`` terms cancel), hence the
    compact form. ``beta`` 0 and 1 are forward and reverse KL (TRL's convention).
    """
    if beta == 0.0:
        return forward_kl(lq, lp, scratch, beta)
    if beta == 1.0:
        return reverse_kl(lq, lp, scratch, beta)
    c, d = scratch[0], scratch[1]
    _log_mixture(lp, beta, lq, 1.0 - beta, out=c)  # log m
    torch.exp(lp, out=d)  # p
    kl_p = lp.sub_(c).mul_(d).sum(1)  # sum p (log p - log m)
    torch.sub(lq, c, out=d)  # log q - log m
    torch.exp(lq, out=c)  # q
    kl_q = d.mul_(c).sum(1)
    d.addcmul_(c, _neg_col(kl_q)).mul_(1.0 - beta)
    return beta * kl_p + (1.0 - beta) * kl_q, d, lp


def total_variation(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``0.5 sum |q - p|``; ``g = 0.5 sign(q - p)`` (sign(0) = 0, as autograd's ``abs``)."""
    c, d = scratch[0], scratch[1]
    torch.exp(lq, out=c)  # q
    lp.exp_()
    torch.sub(c, lp, out=lp)  # q - p
    torch.sign(lp, out=d)
    rows = 0.5 * lp.mul_(d).sum(1)  # |q - p| summed in a cascade (vector_norm is less exact)
    s = d.mul_(c).sum(1)  # q sign(q - p)
    d.addcmul_(c, _neg_col(s)).mul_(0.5)
    return rows, d, lp


def skew_kl(lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(p || m)``, ``m = alpha p + (1 - alpha) q``; ``g = -(1 - alpha) p / m``."""
    if alpha == 0.0:  # m = q exactly; p / q itself could overflow where q underflows
        return forward_kl(lq, lp, scratch, alpha)
    c, d = scratch[0], scratch[1]
    _log_mixture(lp, alpha, lq, 1.0 - alpha, out=c)  # log m
    torch.exp(lp, out=d)  # p
    lp.sub_(c)  # log p - log m (<= -log alpha)
    rows = d.mul_(lp).sum(1)
    lp.exp_()  # p / m, at most 1 / alpha
    torch.exp(lq, out=c)  # q
    s = torch.mul(c, lp, out=d).sum(1)  # d = q p / m
    d.addcmul_(c, _neg_col(s)).mul_(-(1.0 - alpha))
    return rows, d, lp


def skew_reverse_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(q || m)``, ``m = (1 - alpha) p + alpha q``;
    ``dD/dz = q (log q - log m - D - alpha (q/m - <q, q/m>))``."""
    if alpha == 0.0:  # m = p exactly; q^2 / p could overflow where p underflows
        return reverse_kl(lq, lp, scratch, alpha)
    c, d = scratch[0], scratch[1]
    _log_mixture(lp, 1.0 - alpha, lq, alpha, out=c)  # log m
    torch.sub(lq, c, out=lp)  # log q - log m (<= -log alpha)
    torch.add(lp, lq, out=d).exp_()  # q^2 / m = exp(2 log q - log m), at most q / alpha
    torch.exp(lq, out=c)  # q
    rows = lp.mul_(c).sum(1)  # lp = q (log q - log m)
    q2_m = d.sum(1)
    lp.add_(d, alpha=-alpha).addcmul_(c, (alpha * q2_m - rows).unsqueeze(1))
    return rows, lp, d
