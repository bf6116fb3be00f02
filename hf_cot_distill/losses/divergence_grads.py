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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

ChunkGradFn = Callable[[Tensor, Tensor, Sequence[Tensor], float], tuple[Tensor, Tensor, Tensor]]


def _rowdot(x: Tensor, y: Tensor) -> Tensor:
    """Per-row dot product ``(n, V), (n, V) -> (n, 1)`` without an ``(n, V)`` temporary."""
    return torch.einsum("nv,nv->n", x, y).unsqueeze(1)


def forward_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(p || q)``; ``dD/dz = q - p``."""
    c = scratch[0]
    torch.sub(lp, lq, out=c)  # log p - log q
    lp.exp_()  # p (teacher log-probs are no longer needed)
    rows = _rowdot(lp, c)
    torch.exp(lq, out=c)
    c.sub_(lp)
    return rows.squeeze(1), c, lp


def reverse_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(q || p)``; ``dD/dz = q * (log q - log p - D)``."""
    c = scratch[0]
    torch.sub(lq, lp, out=c)
    torch.exp(lq, out=lp)  # q
    rows = _rowdot(lp, c)
    c.sub_(rows).mul_(lp)
    return rows.squeeze(1), c, lp


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
    torch.exp(lq, out=c)  # q
    torch.exp(lp, out=d)  # p
    q_logq = _rowdot(c, lq)
    p_logp = _rowdot(d, lp)
    torch.mul(d, beta, out=lp).add_(c, alpha=1.0 - beta)  # m, in the teacher buffer
    lp.log_()  # log m
    kl_q = q_logq - _rowdot(c, lp)
    kl_p = p_logp - _rowdot(d, lp)
    rows = beta * kl_p + (1.0 - beta) * kl_q
    torch.sub(lq, lp, out=lp).sub_(kl_q).mul_(c).mul_(1.0 - beta)
    return rows.squeeze(1), lp, d


def total_variation(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], param: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``0.5 sum |q - p|``; ``g = 0.5 sign(q - p)`` (sign(0) = 0, as autograd's ``abs``)."""
    c = scratch[0]
    torch.exp(lq, out=c)  # q
    lp.exp_()
    torch.sub(c, lp, out=lp)  # q - p
    rows = 0.5 * torch.linalg.vector_norm(lp, 1, dim=1)
    lp.sign_().mul_(0.5)
    lp.sub_(_rowdot(c, lp)).mul_(c)
    return rows, lp, c


def skew_kl(lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(p || m)``, ``m = alpha p + (1 - alpha) q``; ``g = -(1 - alpha) p / m``."""
    c, d = scratch[0], scratch[1]
    torch.exp(lp, out=d)  # p
    p_logp = _rowdot(d, lp)
    torch.exp(lq, out=c)  # q
    torch.mul(c, 1.0 - alpha, out=lp).add_(d, alpha=alpha)  # m
    lp.log_()
    rows = p_logp - _rowdot(d, lp)
    lp.exp_()  # m again: one exp pass instead of a fifth buffer
    d.div_(lp)  # p / m
    d.sub_(_rowdot(c, d)).mul_(c).mul_(-(1.0 - alpha))
    return rows.squeeze(1), d, lp


def skew_reverse_kl(
    lq: Tensor, lp: Tensor, scratch: Sequence[Tensor], alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``KL(q || m)``, ``m = (1 - alpha) p + alpha q``;
    ``dD/dz = q (log q - log m - D - alpha (q/m - <q, q/m>))``."""
    c, d = scratch[0], scratch[1]
    torch.exp(lq, out=c)  # q
    lp.exp_().mul_(1.0 - alpha).add_(c, alpha=alpha)  # m
    torch.div(c, lp, out=d)  # q / m
    lp.log_()
    torch.sub(lq, lp, out=lp)  # log q - log m
    rows = _rowdot(c, lp)
    q_qm = _rowdot(c, d)
    lp.add_(d, alpha=-alpha).add_(alpha * q_qm - rows).mul_(c)
    return rows.squeeze(1), lp, d
