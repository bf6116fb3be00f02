"""Memory-bounded KD (and CE) from last hidden states: chunks of *selected* positions only.

At the Qwen2.5 vocabulary (151,936) the full student and teacher logits of a 2,048-token batch
are 1.2 GB each in fp32, and a naive autograd KD keeps several such tensors for backward. Here
the lm_head products are done chunk by chunk over the positions that carry a KD or CE weight
(selective KD costs proportionally less; unselected positions are skipped, not masked), and
the gradients w.r.t. the student hidden states, lm_head weight and bias are accumulated
during the forward pass, so no logits survive a chunk. ``backward`` only rescales them.

This module owns chunking, selection, temperature, weights, CE, padding of the vocabulary,
dtype handling and normalisation; each divergence only writes its per-chunk math
(:meth:`divergences.Divergence.rows_and_grad`). Liger-Kernel's chunked losses follow the same split.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hf_cot_distill.core.sections import NUM_SECTIONS
from hf_cot_distill.core.validation import check_int
from hf_cot_distill.losses._inputs import FusedInputs, check_fused_inputs
from hf_cot_distill.losses.cached import CachedTargets, sampled_rows_and_grad, topk_rows_and_grad
from hf_cot_distill.losses.divergences import Divergence, resolve_divergence

BUFFER_BUDGET_BYTES = 256 * 2**20
"""Default total size of the per-chunk ``(n, V)`` work buffers; sets the default chunk size."""
MASKED_BUFFERS = 16
"""``(n, V)`` buffers a chunk may need on the masked-logit path (autograd through the row
function: up to 7 saved for ``jsd``, its gradients, plus the workspace); sets its chunk size."""


class FusedKDOutput(NamedTuple):
    """Result of :func:`fused_linear_kd`.

    ``loss`` (scalar, compute dtype, the only differentiable field) is
    ``kd_scale * kd_sum + ce_scale * ce_sum``. ``kd_sum = sum_i kd_w_i D_i`` (the true
    divergence, see :mod:`divergences`), ``ce_sum = sum_i ce_w_i CE_i``; ``kd_count`` /
    ``ce_count`` (int64) count the positions with weight > 0. ``section_*`` are ``(4,)``
    tensors indexed by :class:`~hf_cot_distill.core.sections.Section` (``None`` without
    ``section_ids``). All but ``loss`` are detached, for logging and normalisation.
    """

    loss: Tensor
    kd_sum: Tensor
    kd_count: Tensor
    ce_sum: Tensor
    ce_count: Tensor
    section_kd_sum: Tensor | None = None
    section_kd_count: Tensor | None = None
    section_ce_sum: Tensor | None = None
    section_ce_count: Tensor | None = None


@dataclass(frozen=True)
class _Settings:
    divergence: Divergence
    param: float
    temperature: float
    scale_by_temperature_squared: bool
    vocab_size: int
    chunk_size: int
    masked: bool = False  # a bias has -inf entries (masked logits): see _FusedPass._masked_rows_and_grad
    targets: CachedTargets | None = None  # a cached teacher (flat positions) instead of teacher logits


def masked_logits(vocab_size: int, *biases: Tensor | None) -> bool:
    """Does a bias mask logits (``-inf`` among its first ``vocab_size`` entries)? One check per
    call, on ``(V,)`` vectors only: the hidden states and weights are finite in any model."""
    return any(b is not None and bool(b[:vocab_size].min() == -math.inf) for b in biases)


def zero3_partitioned(*tensors: Tensor | None) -> list[Tensor]:
    """The tensors that are DeepSpeed ZeRO-3 partitioned parameters (they carry ``ds_id``)."""
    return [t for t in tensors if t is not None and hasattr(t, "ds_id")]


def gather_zero3(tensors: Sequence[Tensor | None]) -> contextlib.AbstractContextManager[Any]:
    """Context that gathers ZeRO-3 partitioned lm_head weights for the whole fused pass.

    Gathering *around* the autograd ``apply`` (not inside ``forward``) matters: autograd records
    the full ``(V, H)`` shape of the weight, so the full-shape gradient returned by ``backward``
    is accepted and DeepSpeed's gradient hooks reduce-scatter it; the backward itself needs no
    weight (gradients were computed in the forward), so no second gather happens.
    ``modifier_rank=None``: read only, nothing is broadcast back.
    """
    # A weight already gathered by its module's hooks (the trainer runs the loss as the student
    # lm_head's forward) stays under those hooks: re-gathering it here would release it at exit
    # while the module still holds it. (ZeroParamStatus compared by name: no deepspeed import.)
    params = [
        p
        for p in zero3_partitioned(*tensors)
        if getattr(p, "ds_status", None) is None or p.ds_status.name != "AVAILABLE"
    ]
    if not params:
        return contextlib.nullcontext()
    import deepspeed  # only needed (and only imported) when a parameter is partitioned

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


class _Workspace:
    """Flat buffers reused by every chunk; ``view(i, m)`` is a contiguous ``(m, V)`` view."""

    def __init__(self) -> None:
        self._flat: dict[tuple[int, torch.dtype], Tensor] = {}

    def view(
        self, i: int, rows: int, cols: int, dtype: torch.dtype, device: torch.device, cap: int
    ) -> Tensor:
        key = (i, dtype)
        if key not in self._flat:
            self._flat[key] = torch.empty(cap * cols, dtype=dtype, device=device)
        return self._flat[key][: rows * cols].view(rows, cols)


class _FusedPass:
    """One forward pass: owns selection, chunking, CE, scaling and gradient accumulation."""

    def __init__(
        self, x: FusedInputs, s: _Settings, kd_scale: Tensor, ce_scale: Tensor, needs: tuple[bool, ...]
    ):
        self.x, self.s = x, s
        v = s.vocab_size
        self.cdt = torch.promote_types(x.student_hidden.dtype, torch.float32)
        self.dev = x.student_hidden.device
        self.sw, self.tw = x.student_weight[:v], x.teacher_weight[:v]
        self.sb = x.student_bias[:v] if x.student_bias is not None else None
        self.tb = x.teacher_bias[:v] if x.teacher_bias is not None else None
        self.kd_scale, self.ce_scale = kd_scale.to(self.cdt), ce_scale.to(self.cdt)
        need_h, need_w, need_b = needs
        zeros = lambda t: torch.zeros(t.shape, dtype=self.cdt, device=self.dev)  # noqa: E731
        self.grad_h = zeros(x.student_hidden) if need_h else None
        self.grad_w = zeros(x.student_weight) if need_w else None
        self.grad_b = zeros(x.student_bias) if need_b and x.student_bias is not None else None
        self.ws = _Workspace()
        self.kd_sum = torch.zeros((), dtype=self.cdt, device=self.dev)
        self.ce_sum = torch.zeros((), dtype=self.cdt, device=self.dev)
        self.sec = x.section_ids is not None
        self.sec_stats = torch.zeros(
            4, NUM_SECTIONS, dtype=self.cdt, device=self.dev
        )  # kd sum/count, ce sum/count

    def _buf(self, i: int, rows: int, dtype: torch.dtype | None = None) -> Tensor:
        return self.ws.view(i, rows, self.s.vocab_size, dtype or self.cdt, self.dev, self.cap)

    def _logits(
        self, out: Tensor, h: Tensor, w: Tensor, b: Tensor | None, scale: float, tmp_slot: int
    ) -> None:
        """``out = (h @ w.T + b) * scale`` in ``out``'s dtype; the product runs in ``w``'s dtype."""
        target = out if w.dtype == out.dtype else self._buf(tmp_slot, h.shape[0], w.dtype)
        if b is None:
            torch.mm(h, w.t(), out=target)
            if scale != 1.0:
                target.mul_(scale)
        else:  # the scale is folded into addmm: (b + h w^T) * scale in one pass
            torch.addmm(b, h, w.t(), beta=scale, alpha=scale, out=target)
        if target is not out:
            out.copy_(target)

    def _ce(self, lq1: Tensor, grad: Tensor, idx: Tensor) -> None:
        """Cross-entropy at temperature 1 on rows of ``lq1`` (student log-probs, overwritten)."""
        cw = self.x.ce_weights.index_select(0, idx).to(self.cdt)
        labels = torch.where(cw > 0, self.x.ce_labels.index_select(0, idx), 0).unsqueeze(1)
        rows = torch.where(cw > 0, -lq1.gather(1, labels).squeeze(1), 0.0)
        self.ce_sum += (rows * cw).sum()
        self._section_add(2, idx, rows * cw, cw > 0)
        coef = (cw * self.ce_scale).unsqueeze(1)
        lq1.exp_()  # softmax: dCE/ds = q - onehot(label)
        if grad is lq1:
            grad.mul_(coef)
        else:
            grad.addcmul_(lq1, coef)
        grad.scatter_add_(1, labels, -coef)

    def _section_add(self, slot: int, idx: Tensor, values: Tensor, selected: Tensor) -> None:
        if self.sec:
            sec = self.x.section_ids.index_select(0, idx)
            self.sec_stats[slot].index_add_(0, sec, values)
            self.sec_stats[slot + 1].index_add_(0, sec, selected.to(self.cdt))

    def _accumulate(self, grad: Tensor, h: Tensor, idx: Tensor) -> None:
        """Chain rule through the lm_head for one chunk: ``grad`` is dLoss/dlogits ``(m, V)``."""
        if self.grad_h is not None:
            g = (
                grad
                if self.sw.dtype == grad.dtype
                else self._buf(7, grad.shape[0], self.sw.dtype).copy_(grad)
            )
            self.grad_h.index_copy_(0, idx, torch.mm(g, self.sw).to(self.cdt))
        if self.grad_w is not None:  # fp32 accumulation even for bf16 weights
            self.grad_w[: self.s.vocab_size].addmm_(grad.t(), h.to(self.cdt))
        if self.grad_b is not None:
            self.grad_b[: self.s.vocab_size].add_(grad.sum(0))

    def run_kd(self, idx: Tensor) -> None:
        s, x = self.s, self.x
        m, inv_t = idx.shape[0], 1.0 / s.temperature
        h = x.student_hidden.index_select(0, idx)
        lq, lp = self._buf(0, m), self._buf(1, m)
        self._logits(lq, h, self.sw, self.sb, inv_t, 7)
        if s.targets is not None:
            rows, grad, free = self._cached_rows_and_grad(idx, lq, lp)
        else:
            rows, grad, free = self._dense_rows_and_grad(idx, lq, lp)
        kw = x.kd_weights.index_select(0, idx).to(self.cdt)
        t2 = s.temperature**2 if s.scale_by_temperature_squared else 1.0
        self.kd_sum += (rows * kw).sum() * t2
        self._section_add(0, idx, rows * kw * t2, kw > 0)
        # d/ds = (1/T) d/dz; the T^2 factor (if any) scales value and gradient alike.
        grad.mul_((kw * (self.kd_scale * t2 * inv_t)).unsqueeze(1))
        if bool((x.ce_weights.index_select(0, idx) > 0).any()):
            if s.temperature == 1.0:
                lq1 = lq  # same distribution; lq is not needed any more
            else:  # log_softmax(T * log_softmax(s / T)) == log_softmax(s)
                lq1 = torch.mul(lq, s.temperature, out=free)
                torch.log_softmax(lq1, 1, out=lq1)
            self._ce(lq1, grad, idx)
        self._accumulate(grad, h, idx)

    def _dense_rows_and_grad(self, idx: Tensor, lq: Tensor, lp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The divergence against the teacher's logits at ``idx``: ``lq`` (scaled student logits)
        becomes log-probs; returns the rows, ``dD/dz`` and a free ``(m, V)`` buffer."""
        s, x = self.s, self.x
        scratch = [self._buf(2 + i, idx.shape[0]) for i in range(s.divergence.n_scratch)]
        self._logits(lp, x.teacher_hidden.index_select(0, idx), self.tw, self.tb, 1.0 / s.temperature, 7)
        if s.masked:
            rows, grad, free = self._masked_rows_and_grad(lq, lp, scratch)
            torch.log_softmax(lq, 1, out=lq)
            return rows, grad, free
        torch.log_softmax(lq, 1, out=lq)
        torch.log_softmax(lp, 1, out=lp)
        return s.divergence.rows_and_grad(lq, lp, scratch, s.param)

    def _cached_rows_and_grad(self, idx: Tensor, lq: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Forward KL against cached targets (:mod:`cached`): ``lq`` becomes log-probs and is kept
        (CE may reuse it), ``grad`` receives ``dD/dz``; the free buffer returned is a scratch one."""
        targets = self.s.targets
        torch.log_softmax(lq, 1, out=lq)
        ids, weights, valid, extra = targets.rows(idx)
        scratch = self._buf(2, idx.shape[0])
        if targets.mode == "sampled":
            rows = sampled_rows_and_grad(lq, ids, weights.to(self.cdt), extra.to(self.cdt), grad)
        else:
            rows = topk_rows_and_grad(lq, ids, weights.to(self.cdt), valid, extra.to(self.cdt), grad, scratch)
        return rows, grad, scratch

    def _masked_rows_and_grad(
        self, z: Tensor, tz: Tensor, scratch: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rows and ``dD/dz`` from the scaled logits ``z`` (student) and ``tz`` (teacher) when a
        bias masks logits with ``-inf``: the analytic per-chunk gradients compute ``0 * -inf = NaN``
        at a masked token, the registry's row function follows ``0 log 0 = 0`` (as
        ``divergence_loss``), so autograd through it is exact. Slower and several buffers larger
        (see :data:`MASKED_BUFFERS`); only inputs with a ``-inf`` bias take it."""
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            rows = self.s.divergence.rows(torch.log_softmax(z, 1), torch.log_softmax(tz, 1), self.s.param)
            (grad,) = torch.autograd.grad(rows.sum(), z)
        return rows.detach(), grad, scratch[0]

    def run_ce_only(self, idx: Tensor) -> None:
        h = self.x.student_hidden.index_select(0, idx)
        lq1 = self._buf(0, idx.shape[0])
        self._logits(lq1, h, self.sw, self.sb, 1.0, 7)
        torch.log_softmax(lq1, 1, out=lq1)
        self._ce(lq1, lq1, idx)
        self._accumulate(lq1, h, idx)

    def run(self) -> None:
        x, n = self.x, self.s.chunk_size
        kd_idx = torch.nonzero(x.kd_weights > 0).squeeze(1)
        ce_only_idx = torch.nonzero((x.ce_weights > 0) & (x.kd_weights <= 0)).squeeze(1)
        # Buffers hold at most one chunk, and never more rows than are selected.
        self.cap = max(1, min(n, max(kd_idx.shape[0], ce_only_idx.shape[0])))
        for start in range(0, kd_idx.shape[0], n):
            self.run_kd(kd_idx[start : start + n])
        for start in range(0, ce_only_idx.shape[0], n):
            self.run_ce_only(ce_only_idx[start : start + n])
        self.kd_count = (x.kd_weights > 0).sum()
        self.ce_count = (x.ce_weights > 0).sum()


class FusedLinearKDFunction(torch.autograd.Function):
    """Autograd wrapper: all gradients are computed in ``forward``; ``backward`` rescales them.

    Inputs (tensors): student_hidden ``(N, Hs)``, student_weight ``(Vs, Hs)``, student_bias
    ``(Vs,)`` or None, teacher_hidden ``(N, Ht)``, teacher_weight, teacher_bias, kd_scale,
    ce_scale (0-d); then the validated :class:`FusedInputs`, the settings and a dict that
    receives the detached statistics. Output: the scalar loss. Teacher tensors get no gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student_hidden: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None,
        teacher_hidden: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor | None,
        kd_scale: Tensor,
        ce_scale: Tensor,
        inputs: FusedInputs,
        settings: _Settings,
        stats: dict[str, Tensor],
    ) -> Tensor:
        needs = ctx.needs_input_grad[:3]
        fp = _FusedPass(inputs, settings, kd_scale, ce_scale, needs)
        fp.run()
        stats.update(kd_sum=fp.kd_sum, kd_count=fp.kd_count, ce_sum=fp.ce_sum, ce_count=fp.ce_count)
        if fp.sec:
            stats.update(section_stats=fp.sec_stats)
        ctx.dtypes = (
            student_hidden.dtype,
            student_weight.dtype,
            None if student_bias is None else student_bias.dtype,
        )
        ctx.save_for_backward(fp.grad_h, fp.grad_w, fp.grad_b)
        return fp.kd_sum * fp.kd_scale + fp.ce_sum * fp.ce_scale

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grads = []
        for g, dtype in zip(ctx.saved_tensors, ctx.dtypes):
            if g is not None:
                g = g * grad_loss.to(g.dtype) if bool(grad_loss != 1) else g
                g = g.to(dtype)
            grads.append(g)
        return (*grads, None, None, None, None, None, None, None, None)


def default_chunk_size(vocab_size: int, n_buffers: int, itemsize: int = 4) -> int:
    """Positions per chunk so that ``n_buffers`` ``(n, vocab_size)`` buffers fit ``BUFFER_BUDGET_BYTES``."""
    return max(1, BUFFER_BUDGET_BYTES // (n_buffers * vocab_size * itemsize))


def fused_linear_kd(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    *,
    kd_weights: Tensor,
    ce_labels: Tensor | None = None,
    ce_weights: Tensor | None = None,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    beta: float = 0.5,
    alpha: float = 0.1,
    vocab_size: int | None = None,
    section_ids: Tensor | None = None,
    kd_scale: float | Tensor = 1.0,
    ce_scale: float | Tensor = 1.0,
    chunk_size: int | None = None,
    ignore_index: int = -100,
) -> FusedKDOutput:
    """KD (+ CE) from last hidden states without materialising ``(N, V)`` logits.

    Args:
        student_hidden: ``(..., Hs)`` student last hidden states (fp32/bf16/fp16/fp64); the
            leading dims are the positions (e.g. ``(B, T)``), already shifted so that position
            ``i`` predicts ``ce_labels[i]``.
        student_weight: ``(Vs, Hs)`` student lm_head weight, same dtype as ``student_hidden``;
            may be tied to the input embeddings and may be a ZeRO-3 partitioned parameter.
        teacher_hidden: ``(..., Ht)`` teacher last hidden states, same leading dims (no grad).
        teacher_weight: ``(Vt, Ht)`` teacher lm_head weight (no grad).
        kd_weights: ``(...)`` float, >= 0: per-position KD weight; 0 = no KD there (skipped).
        ce_labels: ``(...)`` int64 next-token labels, ``ignore_index`` where unsupervised.
        ce_weights: ``(...)`` float, >= 0; default 1 where ``ce_labels != ignore_index``.
        student_bias, teacher_bias: ``(Vs,)`` / ``(Vt,)`` or None. ``-inf`` entries mask those
            tokens (probability 0, ``0 log 0 = 0`` as in :func:`divergence_loss`); a masked call
            runs each chunk through autograd (slower; default chunks sized for
            :data:`MASKED_BUFFERS` buffers).
        divergence, temperature, scale_by_temperature_squared, beta, alpha: see
            :mod:`divergences`. CE is always at temperature 1.
        vocab_size: real vocabulary size; lm_head rows beyond it (padding) are excluded for
            both models and get zero gradient. Default: the rows of both weights (must agree).
        section_ids: ``(...)`` int64 :class:`Section` ids for per-section statistics.
        kd_scale, ce_scale: multipliers of the differentiable ``loss`` (e.g. ``0.5 / n_kd``
            with ``n_kd`` the global KD count across micro-batches and ranks).
        chunk_size: positions per chunk (default: :func:`default_chunk_size`).

    Returns:
        :class:`FusedKDOutput`. Gradients flow from ``loss`` to ``student_hidden``,
        ``student_weight`` and ``student_bias`` (computed in fp32 or better; cast back to the
        input dtypes). Empty selections give zero sums, zero counts and zero gradients.
    """
    with gather_zero3([student_weight, student_bias, teacher_weight, teacher_bias]):
        entry, param = resolve_divergence(divergence, temperature=temperature, beta=beta, alpha=alpha)
        x = check_fused_inputs(
            student_hidden, student_weight, teacher_hidden, teacher_weight, kd_weights=kd_weights,
            ce_labels=ce_labels, ce_weights=ce_weights, student_bias=student_bias,
            teacher_bias=teacher_bias, vocab_size=vocab_size, section_ids=section_ids,
            ignore_index=ignore_index, num_sections=NUM_SECTIONS,
        )  # fmt: skip
        masked = masked_logits(x.vocab_size, x.student_bias, x.teacher_bias)
        if chunk_size is None:
            itemsize = torch.promote_types(student_hidden.dtype, torch.float32).itemsize
            n_buffers = MASKED_BUFFERS if masked else 2 + entry.n_scratch
            chunk_size = default_chunk_size(x.vocab_size, n_buffers, itemsize)
        else:
            chunk_size = check_int(
                "chunk_size", chunk_size, minimum=1, fix="pass an int >= 1, or None (automatic)"
            )
        settings = _Settings(
            entry, param, float(temperature), scale_by_temperature_squared, x.vocab_size, chunk_size, masked
        )
        return _apply(x, settings, kd_scale, ce_scale)


def _apply(
    x: FusedInputs, settings: _Settings, kd_scale: float | Tensor, ce_scale: float | Tensor
) -> FusedKDOutput:
    """Check the scales, run :class:`FusedLinearKDFunction`, package the statistics."""
    scales = [
        torch.as_tensor(v, dtype=torch.float64, device=x.student_hidden.device) for v in (kd_scale, ce_scale)
    ]
    for field, v in zip(("kd_scale", "ce_scale"), scales):
        if v.numel() != 1 or not bool(torch.isfinite(v)):
            raise ValueError(
                f"{field}: got {v.tolist()}; use one finite number (e.g. 1 / num_items_in_batch)."
            )
    stats: dict[str, Tensor] = {}
    loss = FusedLinearKDFunction.apply(
        x.student_hidden, x.student_weight, x.student_bias, x.teacher_hidden, x.teacher_weight,
        x.teacher_bias, scales[0].reshape(()), scales[1].reshape(()), x, settings, stats,
    )  # fmt: skip
    sec = stats.get("section_stats")
    return FusedKDOutput(
        loss, stats["kd_sum"], stats["kd_count"], stats["ce_sum"], stats["ce_count"],
        *((sec[0], sec[1].long(), sec[2], sec[3].long()) if sec is not None else ()),
    )  # fmt: skip


CACHED_BUFFERS = 3
"""``(n, V)`` buffers a chunk needs against cached targets (student log-probs, gradient, scratch)."""


def fused_cached_kd(
    student_hidden: Tensor,
    student_weight: Tensor,
    targets: CachedTargets,
    *,
    kd_weights: Tensor,
    ce_labels: Tensor | None = None,
    ce_weights: Tensor | None = None,
    student_bias: Tensor | None = None,
    divergence: str = "forward_kl",
    temperature: float | None = None,
    scale_by_temperature_squared: bool = False,
    vocab_size: int | None = None,
    section_ids: Tensor | None = None,
    kd_scale: float | Tensor = 1.0,
    ce_scale: float | Tensor = 1.0,
    chunk_size: int | None = None,
    ignore_index: int = -100,
) -> FusedKDOutput:
    """:func:`fused_linear_kd` with the teacher replaced by cached targets (:mod:`cached`).

    ``targets`` holds one row per position of ``student_hidden``'s leading dims, flattened
    (``(N, K)``); every position with ``kd_weights > 0`` must have a target. Forward KL only (the
    one divergence a sampled or top-K cache estimates: the others need the teacher's whole
    distribution), at the cache's temperature. Same outputs, chunking and gradients as
    :func:`fused_linear_kd`: the ``(N, V)`` logits never exist.
    """
    if divergence != "forward_kl":
        raise ValueError(
            f"divergence={divergence!r}: cannot be estimated from a teacher cache (only forward_kl can: the others "
            "need the teacher's whole distribution); fix: divergence: forward_kl, or train with the online teacher."
        )
    if not isinstance(targets, CachedTargets):
        raise ValueError(
            f"targets: got {type(targets).__name__}; fix: pass CachedTargets (e.g. TeacherCache.targets)."
        )
    if temperature is None:
        temperature = targets.temperature
    if not math.isclose(float(temperature), targets.temperature, rel_tol=1e-9):
        raise ValueError(
            f"temperature={temperature!r}: the teacher cache was built at temperature {targets.temperature!r}; fix: "
            f"train at {targets.temperature!r}, or build a cache at {temperature!r}."
        )
    with gather_zero3([student_weight, student_bias]):
        entry, param = resolve_divergence("forward_kl")
        # the teacher fields of the shared validation are stand-ins: no teacher tensor is read
        x = check_fused_inputs(
            student_hidden, student_weight, student_hidden.detach(), student_weight.detach(),
            kd_weights=kd_weights, ce_labels=ce_labels, ce_weights=ce_weights, student_bias=student_bias,
            teacher_bias=None, vocab_size=vocab_size, section_ids=section_ids, ignore_index=ignore_index,
            num_sections=NUM_SECTIONS,
        )  # fmt: skip
        n = x.kd_weights.shape[0]
        if targets.ids.shape[0] != n:
            raise ValueError(
                f"targets: {targets.ids.shape[0]} rows for {n} positions; fix: one row of targets per position "
                "(flattened like student_hidden's leading dims)."
            )
        uncovered = int(((x.kd_weights > 0) & ~targets.covered.to(x.kd_weights.device)).sum())
        if uncovered:
            raise ValueError(
                f"kd_weights: {uncovered} positions carry a KD weight but have no cached target; fix: a cache built "
                "over these sections (cache-teacher --positions), or a supervision preset within the cached ones."
            )
        if bool((targets.ids >= x.vocab_size).any()):
            raise ValueError(
                f"targets: ids >= vocab_size {x.vocab_size} (the cache was built with a larger vocabulary); fix: a "
                "cache built with this tokenizer."
            )
        if chunk_size is None:
            itemsize = torch.promote_types(student_hidden.dtype, torch.float32).itemsize
            chunk_size = default_chunk_size(x.vocab_size, CACHED_BUFFERS, itemsize)
        chunk_size = check_int(
            "chunk_size", chunk_size, minimum=1, fix="pass an int >= 1, or None (automatic)"
        )
        device = x.student_hidden.device
        on_device = CachedTargets(
            targets.mode, targets.ids.to(device), targets.weights.to(device),
            None if targets.entropy is None else targets.entropy.to(device),
            None if targets.tail_logmass is None else targets.tail_logmass.to(device),
            targets.temperature,
        )  # fmt: skip
        settings = _Settings(
            entry,
            param,
            float(temperature),
            scale_by_temperature_squared,
            x.vocab_size,
            chunk_size,
            False,
            on_device,
        )
        return _apply(x, settings, kd_scale, ce_scale)
