"""QuantEase: layer-wise weight quantization by cyclic coordinate descent (Behdin et al., 2023).

The objective is GPTQ's, the output reconstruction error of one linear on its calibration inputs
``X [N, in]``: ``f(Ŵ) = tr((W − Ŵ) H (W − Ŵ)ᵀ)`` with ``H ∝ XᵀX`` (damped as in GPTQ), over the
weights ``Ŵ [out, in]`` whose entries lie on a fixed quantization grid ``(q − zero) * scale``
(``q`` integer in the code range; one scale / zero per row and group of columns). Fixing every
column but ``j``, ``f`` is a separable quadratic in the entries of column ``j`` with curvature
``H[j, j]``, minimized without the grid at ``b = Ŵ[:, j] + R[:, j] / H[j, j]`` where
``R = (W − Ŵ) H``; on the grid, by rounding ``b`` to the nearest code (clamped to the range),
which is exact for a 1-D convex quadratic. QuantEase sweeps the columns cyclically, each update
the exact minimizer over its column, so ``f`` never increases. After a column changes by ``δ``,
``R -= δ H[j, :]`` (rank one); here the updates are batched per block of columns (the block's own
columns updated one by one, the others with one matmul per block), so a sweep costs about one
GPTQ solve.

Start (``QuantizeConfig.quantease_init``): ``"gptq"`` (default) begins from the GPTQ solution and
keeps its grid, so the result is never worse than GPTQ's on the damped objective; ``"weight"``
begins, as in the paper, from the unquantized weight on the grid of the original weight (static
group scales), whose first sweep quantizes every column. Columns are swept in the same order as
GPTQ's (``act_order``: decreasing ``diag H``). The paper's outlier-aware variant (a sparse set of
weights kept in full precision) is not implemented: every weight of a quantized linear is on the grid.

This module holds the sweeps (:func:`coordinate_descent`); the entry point that damps ``H``, picks
the start and the order is :func:`hf_cot_distill.compress.quantize.quantease_quantize_weight`
(``QuantizeConfig(method="quantease")`` in ``quantize_model``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["column_steps", "coordinate_descent", "quantease_objective"]


@contextmanager
def column_steps() -> Iterator[None]:
    """One intra-op thread for the per-column steps of GPTQ / QuantEase: vectors of a few hundred
    entries, where a second thread only adds synchronisation (several times slower on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def quantease_objective(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` in float64 (``H`` as given: pass the damped one to compare solutions)."""
    D = W.double() - W_hat.double()
    return float(((D @ H.double()) * D).sum())


def coordinate_descent(
    Wt: torch.Tensor,
    H: torch.Tensor,
    Qt: torch.Tensor,
    S: torch.Tensor,
    Z: torch.Tensor,
    bits: int,
    iters: int,
    block: int,
    start_from_weight: bool = False,
) -> torch.Tensor:
    """``iters`` sweeps over the columns in the order given, in place on the codes ``Qt``; returns ``Qt``.

    Everything is in the sweep order and transposed (a column of ``W`` is a contiguous row):
    ``Wt [in, out]`` the weight, ``H [in, in]`` the damped Hessian, ``Qt [in, out]`` the starting
    codes (float, integer-valued), ``S`` / ``Z [in, out]`` the scale and zero point of every entry.
    ``start_from_weight``: the current solution is ``Wt`` itself (unquantized), not ``(Qt − Z) S``.
    Updates of ``R = H (W − Ŵ)ᵀ`` are batched per ``block`` columns (module docstring).
    """
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    n = Wt.shape[0]
    W_hat = Wt.clone() if start_from_weight else (Qt - Z) * S
    R = H @ (Wt - W_hat)  # [in, out]: minus half the gradient of f, transposed
    inv_d = H.diagonal().reciprocal()
    for _ in range(iters):
        for i1 in range(0, n, block):
            i2 = min(i1 + block, n)
            Rb, Hb = R[i1:i2].clone(), H[i1:i2, i1:i2]
            delta = torch.empty(i2 - i1, Wt.shape[1], dtype=Wt.dtype, device=Wt.device)
            with column_steps():
                for i in range(i2 - i1):
                    j = i1 + i
                    old = W_hat[j]
                    b = Rb[i].mul(inv_d[j]).add_(old)  # the column's exact minimizer off the grid
                    q = b.div_(S[j]).add_(Z[j]).round_().clamp_(qmin, qmax)
                    new = (q - Z[j]).mul_(S[j])
                    step = torch.sub(new, old, out=delta[i])
                    Qt[j], W_hat[j] = q, new
                    Rb.addr_(Hb[i], step, alpha=-1)
            R.addmm_(H[:, i1:i2], delta, alpha=-1)
    return Qt
