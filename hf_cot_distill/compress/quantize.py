"""Post-training weight quantization (int8 / int4) of the decoder linears: GPTQ, QuantEase or round-to-nearest.

``quantize_model`` walks the decoder layers in order. For each layer it runs the calibration batches
through it (inputs computed by the already-quantized earlier layers) and accumulates the Hessian
``H = 2 XᵀX / N`` of the inputs ``X [N, in]`` over the non-pad tokens, once per distinct input:
linears that read the same tensor (``q/k/v_proj``, ``gate/up_proj``) share one Hessian and are
quantized together as one stacked weight (GPTQ and QuantEase treat the rows of ``W`` independently,
so stacking changes nothing but the work). Each weight ``W [out, in]`` is quantized with
``gptq_quantize_weight`` (layer-wise reconstruction with error feedback, Frantar et al. 2022), by
``quantease_quantize_weight`` (cyclic coordinate descent on the
same objective, Behdin et al. 2023) or by plain round-to-nearest, and the dequantized weight is
written back in place (fake quantization: the in-memory model computes exactly what the saved
quantized model computes). ``save_quantized`` writes the integer codes in the compressed-tensors
``pack-quantized`` format, which ``AutoModelForCausalLM.from_pretrained`` loads.

By default the columns are processed in static activation order (``act_order``: decreasing Hessian
diagonal, group scales fixed beforehand from the original weight), the Hessians and solves are
float32 (``dtype``), and round-to-nearest runs no calibration at all unless ``error_report`` asks
for the per-layer errors.

Codes are signed, ``q in [-2^(b-1), 2^(b-1) - 1]`` for symmetric and asymmetric quantization alike
(the compressed-tensors convention); a weight dequantizes to ``(q - zero) * scale`` with one scale
(and zero point) per output row and group of ``group_size`` consecutive input columns.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_cot_distill.compress._calibration import read_calibration
from hf_cot_distill.compress._ct_format import load_quantized, write_checkpoint
from hf_cot_distill.compress.quantease import column_steps as _column_steps
from hf_cot_distill.compress.quantease import coordinate_descent
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int
from hf_cot_distill.models.decoder import LayerInputs, decoder_layers

__all__ = [
    "LayerReport",
    "QuantizeConfig",
    "QuantizeReport",
    "QuantizedWeight",
    "dequantize",
    "gptq_quantize_weight",
    "load_quantized",
    "quantease_quantize_weight",
    "quantize_model",
    "quantize_weight",
    "save_quantized",
]


def valid_ignore_pattern(pattern: object) -> bool:
    """A non-empty module-name suffix, or ``re:<regex>`` with a regex that compiles."""
    if not isinstance(pattern, str) or not pattern:
        return False
    try:
        re.compile(pattern[3:]) if pattern.startswith("re:") else None
    except re.error:
        return False
    return True


METHODS = ("gptq", "quantease", "rtn")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class QuantizeConfig:
    """Settings of ``quantize_model`` (validated on construction; ``group_size=-1`` means ``None``).

    ``ignore`` entries match full module names: a plain string by suffix (``"lm_head"``,
    ``"mlp.down_proj"``), a ``"re:<pattern>"`` string by ``re.search``. ``act_order`` (default)
    processes the columns by decreasing Hessian diagonal with the group scales fixed beforehand
    from the original weight ("static" activation ordering), so the groups stay contiguous and the
    saved format needs no ``g_idx``; off, columns go in input order and each group's scale is taken
    from its error-updated columns. ``dtype`` is that of the Hessians and solves (``"float64"``
    changes the codes of a real model by rounding ties only, see ``benchmarks/b9_quant_peer.py``).
    ``error_report``: compute every linear's relative output error (and that of round-to-nearest)
    for the report; ``None`` = yes for GPTQ / QuantEase (their Hessians exist anyway), no for RTN,
    which then needs no calibration data. ``quantease_iters`` / ``quantease_init``: the
    coordinate-descent sweeps of ``method="quantease"`` and its start (``"gptq"``: the GPTQ
    solution; ``"weight"``: the unquantized weight, as in the paper).
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    method: str = "gptq"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    ignore: tuple[str, ...] = ("lm_head",)
    dtype: str = "float32"
    error_report: bool | None = None
    quantease_iters: int = 8
    quantease_init: str = "gptq"

    def __post_init__(self) -> None:
        if self.group_size == -1:
            self.group_size = None
        if isinstance(self.ignore, list):
            self.ignore = tuple(self.ignore)
        self.bits = check_int("QuantizeConfig.bits", self.bits, fix="use 4 or 8")
        check_choice("QuantizeConfig.bits", self.bits, (4, 8), fix="use 4 or 8")
        if self.group_size is not None:  # None: one scale per output channel
            fix = "use a positive int (e.g. 128), or None / -1 for one scale per output channel"
            self.group_size = check_int("QuantizeConfig.group_size", self.group_size, minimum=1, fix=fix)
        self.symmetric = check_bool("QuantizeConfig.symmetric", self.symmetric)
        check_choice("QuantizeConfig.method", self.method, METHODS)
        check_float("QuantizeConfig.damp", self.damp, minimum=0.0, maximum=1.0, fix="e.g. 0.01")
        self.block_size = check_int("QuantizeConfig.block_size", self.block_size, minimum=1, fix="e.g. 128")
        self.act_order = check_bool("QuantizeConfig.act_order", self.act_order)
        check_choice("QuantizeConfig.dtype", self.dtype, tuple(DTYPES))
        if self.error_report is None:  # None: on where the Hessians exist anyway
            self.error_report = self.method != "rtn"
        self.error_report = check_bool("QuantizeConfig.error_report", self.error_report)
        fix = "e.g. 8 (sweeps over all columns; 0 keeps the initial solution)"
        self.quantease_iters = check_int(
            "QuantizeConfig.quantease_iters", self.quantease_iters, minimum=0, fix=fix
        )
        check_choice("QuantizeConfig.quantease_init", self.quantease_init, ("gptq", "weight"))
        ignore = self.ignore
        if not (isinstance(ignore, tuple) and all(valid_ignore_pattern(p) for p in ignore)):
            raise ValueError(
                f"QuantizeConfig.ignore={ignore!r}: must be a tuple of module-name suffixes or 're:<regex>' "
                "strings; fix: e.g. ('lm_head',)."
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype of the Hessians and solves."""
        return DTYPES[self.dtype]

    @property
    def needs_calibration(self) -> bool:
        """Whether ``quantize_model`` replays calibration data (not for RTN without an error report)."""
        return self.method != "rtn" or bool(self.error_report)

    def is_ignored(self, name: str) -> bool:
        """Whether the module named ``name`` (full dotted name) stays in full precision."""
        for p in self.ignore:
            if p.startswith("re:"):
                if re.search(p[3:], name):
                    return True
            elif name == p or name.endswith("." + p):
                return True
        return False


@dataclass
class QuantizedWeight:
    """Integer form of one linear weight ``[out, in]``.

    ``q``: int8 ``[out, in]`` codes; ``scale``: ``[out, n_groups]`` in the weight dtype;
    ``zero``: int8 ``[out, n_groups]`` (all zeros if symmetric); ``n_groups = in / group_size``
    (1 when ``group_size`` is None, i.e. per output channel).
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int | None
    symmetric: bool

    def dequantize(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]`` in the scale dtype."""
        return dequantize(self.q, self.scale, self.zero, self.group_size)


@dataclass
class LayerReport:
    """Relative output error ``‖XWᵀ − XŴᵀ‖ / ‖XWᵀ‖`` of one linear on its calibration inputs.

    ``error`` is that of the method used, ``rtn_error`` that of round-to-nearest on the same inputs;
    both ``None`` (and ``tokens`` 0) when no error report was asked (RTN without calibration).
    """

    name: str
    shape: tuple[int, int]
    tokens: int
    error: float | None
    rtn_error: float | None


@dataclass
class QuantizeReport:
    """What ``quantize_model`` did; ``quantized`` holds the integer weights that ``save_quantized`` writes."""

    config: QuantizeConfig
    layers: list[LayerReport]
    num_quantized_params: int
    num_calibration_tokens: int
    seconds: float
    quantized: dict[str, QuantizedWeight] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no tensors)."""
        n = max(len(self.layers), 1)
        reported = all(r.error is not None for r in self.layers)
        return {
            "config": {**self.config.__dict__, "ignore": list(self.config.ignore)},
            "num_quantized_layers": len(self.layers),
            "num_quantized_params": self.num_quantized_params,
            "num_calibration_tokens": self.num_calibration_tokens,
            "seconds": round(self.seconds, 3),
            "mean_error": sum(r.error for r in self.layers) / n if reported else None,  # type: ignore[misc]
            "mean_rtn_error": sum(r.rtn_error for r in self.layers) / n if reported else None,  # type: ignore[misc]
            "layers": [{**r.__dict__, "shape": list(r.shape)} for r in self.layers],
        }


# ----------------------------------------------------------------------------- weight quantizers


def _qrange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _group(in_features: int, group_size: int | None, name: str) -> int:
    """Columns per group (``in_features`` when per channel); errors if it does not divide them."""
    if group_size is None or group_size == -1:
        return in_features
    if group_size <= 0 or in_features % group_size:
        raise ValueError(
            f"{name}: group_size={group_size} does not divide in_features={in_features}; "
            "use a divisor, None (per channel), or add the layer to QuantizeConfig.ignore"
        )
    return group_size


def _qparams(
    w: torch.Tensor, bits: int, symmetric: bool, dtype: torch.dtype, out: torch.dtype = torch.float64
) -> tuple[torch.Tensor, ...]:
    """Scale and zero point (integer-valued) of ``w [..., n]`` over its last dim, as ``out`` tensors.

    Computed in float64 whatever ``w``'s dtype; the scale is rounded to ``dtype`` (the stored scale)
    before the zero point is derived from it, so both are exact in ``out`` (float32 or float64).
    """
    qmin, qmax = _qrange(bits)
    w = w.double()
    lo = w.amin(-1).clamp(max=0)
    hi = w.amax(-1).clamp(min=0)
    scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2) if symmetric else (hi - lo) / (qmax - qmin)
    scale = scale.to(dtype)
    scale = torch.where(scale == 0, torch.finfo(dtype).eps, scale).double()
    zero = torch.zeros_like(scale) if symmetric else torch.round(qmin - lo / scale).clamp(qmin, qmax)
    return scale.to(out), zero.to(out)


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    qmin, qmax = _qrange(bits)
    return torch.round(w / scale + zero).clamp(qmin, qmax)


def quantize_weight(
    W: torch.Tensor, bits: int, group_size: int | None, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of ``W [out, in]`` (float).

    Returns ``q`` int8 ``[out, in]``, ``scale`` ``[out, n_groups]`` in ``W.dtype`` and ``zero`` int8
    ``[out, n_groups]``. Symmetric: ``scale = max|w| / (2^b - 1) * 2`` and ``zero = 0``; asymmetric:
    ``scale = (max - min) / (2^b - 1)`` with ``min <= 0 <= max``. ``|W - Ŵ| <= scale / 2`` elementwise.
    """
    check_choice("bits", bits, (4, 8))
    out_f, in_f = W.shape
    gs = _group(in_f, group_size, "weight")
    wg = W.detach().double().reshape(out_f, in_f // gs, gs)
    scale, zero = _qparams(wg, bits, symmetric, W.dtype)
    q = _round(wg, scale[..., None], zero[..., None], bits)
    return q.reshape(out_f, in_f).to(torch.int8), scale.to(W.dtype), zero.to(torch.int8)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int | None
) -> torch.Tensor:
    """``(q - zero) * scale`` per group: ``q [out, in]``, ``scale``/``zero`` ``[out, n_groups]`` -> ``[out, in]``.

    Computed in ``scale.dtype`` in the same order as compressed-tensors, so it equals what the
    loaded checkpoint decompresses to.
    """
    out_f, in_f = q.shape
    gs = _group(in_f, group_size, "weight")
    if scale.shape != (out_f, in_f // gs) or zero.shape != scale.shape:
        raise ValueError(
            f"scale {tuple(scale.shape)} / zero {tuple(zero.shape)} do not fit q {(out_f, in_f)}"
        )
    x = q.to(scale.dtype).reshape(out_f, -1, gs) - zero.to(scale.dtype)[..., None]
    return (x * scale[..., None]).reshape(out_f, in_f)


def damped_hessian(H: torch.Tensor, damp: float, dtype: torch.dtype, name: str = "weight") -> torch.Tensor:
    """A copy of ``H`` in ``dtype`` with never-seen columns (zero diagonal) set to 1 on the diagonal and
    ``damp * mean(diag H)`` added to the diagonal; refuses NaN/inf."""
    if not torch.isfinite(H).all():
        raise ValueError(f"{name}: the Hessian of the layer inputs holds NaN/inf (non-finite activations)")
    H = H.detach().to(dtype).clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(damp * H.diagonal().mean())
    return H


def column_order(H: torch.Tensor, act_order: bool) -> torch.Tensor:
    """The order the columns are processed in: decreasing ``diag H`` (stable) with ``act_order``, else 0..in-1."""
    if act_order:
        return torch.argsort(H.diagonal(), descending=True, stable=True)
    return torch.arange(H.shape[0], device=H.device)


def gptq_quantize_weight(
    W: torch.Tensor, H: torch.Tensor, config: QuantizeConfig, name: str = "weight"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ: quantize ``W [out, in]`` column by column, spreading each column's error over the columns
    not yet quantized through the Cholesky factor of ``H⁻¹`` (``H [in, in]``, the input Hessian).

    Solves in ``config.dtype`` with lazy batch updates of ``config.block_size`` columns (rounded to a
    multiple of ``group_size`` so each group's scale is taken from fully updated columns, as in the
    unblocked algorithm). ``H`` is damped by ``damp * mean(diag H)``; columns never seen (zero
    diagonal) are rounded without feedback. With ``act_order`` (or per channel) every scale comes
    from the original weight ("static groups"). Rows are independent: the rows of several weights
    that share ``H`` can be stacked into one call. Returns ``q``, ``scale``, ``zero`` as
    ``quantize_weight`` and the dequantized ``Ŵ [out, in]`` in ``W.dtype``.
    """
    out_f, in_f = W.shape
    if H.shape != (in_f, in_f):
        raise ValueError(f"{name}: Hessian shape {tuple(H.shape)} does not match in_features={in_f}")
    gs = _group(in_f, config.group_size, name)
    bits, sym, dtype = config.bits, config.symmetric, config.torch_dtype
    H = damped_hessian(H, config.damp, dtype, name)
    Wc = W.detach().to(dtype).clone()
    # static groups: all scales from the original weight (per channel, or act_order)
    static = config.act_order or gs == in_f
    if static:
        scale_all, zero_all = _qparams(W.reshape(out_f, in_f // gs, gs), bits, sym, W.dtype, dtype)
    else:
        scale_all = torch.empty(out_f, in_f // gs, dtype=dtype, device=W.device)
        zero_all = torch.empty_like(scale_all)
    order = column_order(H, config.act_order)
    # Columns as contiguous rows (transposed layout): the per-column steps touch contiguous memory.
    Wt = (Wc[:, order] if config.act_order else Wc).T.contiguous()  # [in, out]
    if config.act_order:
        H = H[order][:, order]
    try:
        # H^-1 by cholesky_solve against I (torch.cholesky_inverse is ~12x slower on CPU).
        eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        U = torch.linalg.cholesky(torch.cholesky_solve(eye, torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{name}: the damped Hessian is not positive definite (damp={config.damp}); "
            "increase QuantizeConfig.damp"
        ) from exc
    group_of = order // gs
    if static:  # the scale / zero of every (permuted) column, one row each
        col_scale, col_zero = scale_all.T[group_of].contiguous(), zero_all.T[group_of].contiguous()
    block = config.block_size if static else max(1, config.block_size // gs) * gs
    Qt = torch.empty_like(Wt)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        W1, U1 = Wt[i1:i2], U[i1:i2, i1:i2]  # W1 is a view: updated in place
        E1 = torch.empty_like(W1)
        with _column_steps():
            for i in range(i2 - i1):
                j = i1 + i
                if static:
                    s, z = col_scale[j], col_zero[j]
                else:
                    if j % gs == 0:
                        scale_all[:, j // gs], zero_all[:, j // gs] = _qparams(
                            W1[i : i + gs].T, bits, sym, W.dtype, dtype
                        )
                    s, z = scale_all[:, j // gs], zero_all[:, j // gs]
                w = W1[i]
                q = _round(w, s, z, bits)
                Qt[j] = q
                err = (w - (q - z) * s).div_(U1[i, i])
                E1[i] = err
                if i + 1 < i2 - i1:
                    W1[i + 1 :].addr_(U1[i, i + 1 :], err, alpha=-1)
        if i2 < in_f:
            Wt[i2:].addmm_(U[i1:i2, i2:].T, E1, alpha=-1)
    Q = Qt.T[:, torch.argsort(order)] if config.act_order else Qt.T
    q_int, scale, zero = Q.to(torch.int8).contiguous(), scale_all.to(W.dtype), zero_all.to(torch.int8)
    return q_int, scale, zero, dequantize(q_int, scale, zero, config.group_size).to(W.dtype)


def quantease_quantize_weight(
    W: torch.Tensor,
    H: torch.Tensor,
    config: QuantizeConfig,
    name: str = "weight",
    init: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """QuantEase: ``config.quantease_iters`` sweeps of cyclic coordinate descent on ``tr((W − Ŵ) H (W − Ŵ)ᵀ)``
    (:mod:`hf_cot_distill.compress.quantease`), ``H`` damped like GPTQ's, columns in GPTQ's order.

    ``init``: starting codes ``(q, scale, zero)`` whose grid is kept; ``None`` takes them from
    ``config.quantease_init``: ``"gptq"`` the GPTQ solution (never worse than it on the damped
    objective), ``"weight"`` the unquantized weight on its round-to-nearest grid (0 sweeps: RTN).
    Solves in ``config.dtype``. Returns ``q``, ``scale``, ``zero`` and ``Ŵ`` like :func:`gptq_quantize_weight`.
    """
    out_f, in_f = W.shape
    if H.shape != (in_f, in_f):
        raise ValueError(f"{name}: Hessian shape {tuple(H.shape)} does not match in_features={in_f}")
    gs = _group(in_f, config.group_size, name)
    dtype = config.torch_dtype
    Hd = damped_hessian(H, config.damp, dtype, name)
    start_from_weight = init is None and config.quantease_init == "weight"
    if init is None:
        if start_from_weight:
            init = quantize_weight(W, config.bits, config.group_size, config.symmetric)
        else:
            init = gptq_quantize_weight(W, H, config, name=name)[:3]
    q0, scale, zero = init
    if q0.shape != W.shape or scale.shape != (out_f, in_f // gs) or zero.shape != scale.shape:
        raise ValueError(
            f"{name}: init codes {tuple(q0.shape)} / scale {tuple(scale.shape)} / zero {tuple(zero.shape)} "
            f"do not fit the weight {tuple(W.shape)} with group_size={config.group_size}"
        )
    if config.quantease_iters > 0:
        order = column_order(Hd, config.act_order)
        group_of = order // gs
        Qt = coordinate_descent(
            W.detach().to(dtype).T[order].contiguous(),
            Hd[order][:, order],
            q0.to(dtype).T[order].contiguous(),
            scale.to(dtype).T[group_of].contiguous(),
            zero.to(dtype).T[group_of].contiguous(),
            config.bits,
            config.quantease_iters,
            config.block_size,
            start_from_weight,
        )
        q0 = Qt.T[:, torch.argsort(order)].to(torch.int8).contiguous()
    q_int, s_out, z_out = q0.to(torch.int8), scale.to(W.dtype), zero.to(torch.int8)
    return q_int, s_out, z_out, dequantize(q_int, s_out, z_out, config.group_size).to(W.dtype)


def _relative_errors(W: torch.Tensor, W_hats: list[torch.Tensor], H: torch.Tensor) -> list[float]:
    """``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` for each ``Ŵ`` of ``W_hats``, from ``H ∝ XᵀX``: ``sqrt(tr(ΔHΔᵀ) / tr(WHWᵀ))``.

    One matmul in ``H.dtype`` for ``W`` and every ``Ŵ`` (a report figure: float32 is plenty)."""
    D = torch.stack([W, *(W - W_hat for W_hat in W_hats)]).to(H.dtype)
    quad = ((D @ H) * D).sum(dim=(1, 2)).clamp(min=0).double().tolist()
    den, nums = quad[0], quad[1:]
    return [math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf) for num in nums]


# ----------------------------------------------------------------------------- model-level driver


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None,
    config: QuantizeConfig | None = None,
) -> QuantizeReport:
    """Quantize every ``nn.Linear`` of the decoder layers (not embeddings, not ``config.ignore``) in place.

    ``calibration``: batches ``{"input_ids": [B, T], "attention_mask": [B, T] (optional)}``; pad
    positions (mask 0) are left out of the Hessians. Layers are processed in order, each on the
    outputs of the already-quantized previous ones. Each weight is replaced by its dequantized value;
    the integer form is kept in the returned report for ``save_quantized``. Round-to-nearest without
    ``error_report`` reads no calibration (``None`` is accepted then) and runs no forward pass.
    """
    config = config or QuantizeConfig()
    start = time.perf_counter()
    prefix, layers = decoder_layers(model)
    targets: list[dict[str, nn.Linear]] = []
    for index, layer in enumerate(layers):
        found = {f"{prefix}.{index}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        targets.append({n: m for n, m in found.items() if not config.is_ignored(n)})
    if not any(targets):
        raise ValueError(f"no nn.Linear left to quantize in {prefix} (ignore={config.ignore})")
    for name, module in (item for t in targets for item in t.items()):
        _group(module.in_features, config.group_size, name)
    device = next(model.parameters()).device
    if calibration is None and config.needs_calibration:
        raise ValueError(
            f"calibration=None: method={config.method!r} needs calibration batches; fix: pass them, or use "
            "method='rtn' without error_report"
        )
    batches = read_calibration(calibration, device) if calibration is not None else []
    report = QuantizeReport(config, [], 0, int(sum(int(m.sum()) for _, _, m in batches)), 0.0)
    if not config.needs_calibration:
        for linears in targets:
            for name, module in linears.items():
                _check_weight(name, module.weight)
                _store(name, module, quantize_weight(module.weight, config.bits, config.group_size,
                                                     config.symmetric), config, report, 0, None)  # fmt: skip
        report.seconds = time.perf_counter() - start
        return report

    was_training = model.training
    model.eval()
    try:
        calib = LayerInputs(model, layers, batches)
        for index in range(len(layers)):
            _quantize_layer(calib, targets[index], config, report)
            if index + 1 < len(layers):
                calib.advance()
    finally:
        model.train(was_training)
    report.seconds = time.perf_counter() - start
    return report


def _check_weight(name: str, weight: torch.Tensor) -> None:
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name}: the weight holds NaN/inf")


def _store(
    name: str,
    module: nn.Linear,
    codes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: QuantizeConfig,
    report: QuantizeReport,
    tokens: int,
    errors: tuple[float, float] | None,
) -> None:
    """Write the dequantized codes into ``module`` and record them (and their errors) in ``report``."""
    q, s, z = codes
    W = module.weight
    module.weight.data.copy_(dequantize(q, s, z, config.group_size).to(W.dtype))
    report.quantized[name] = QuantizedWeight(q, s, z, config.bits, config.group_size, config.symmetric)
    error, rtn_error = errors if errors is not None else (None, None)
    report.layers.append(LayerReport(name, tuple(W.shape), tokens, error, rtn_error))
    report.num_quantized_params += W.numel()


def _label(names: list[str]) -> str:
    """``a.b.q_proj`` for one name, ``a.b.{q_proj,k_proj,v_proj}`` for linears of one module."""
    if len(names) == 1:
        return names[0]
    heads = {n.rpartition(".")[0] for n in names}
    if len(heads) == 1:
        return f"{heads.pop()}.{{{','.join(n.rpartition('.')[2] for n in names)}}}"
    return "{" + ",".join(names) + "}"


def _collect_hessians(
    calib: LayerInputs, linears: dict[str, nn.Linear], dtype: torch.dtype, share: bool
) -> tuple[list[list[str]], dict[str, torch.Tensor], dict[str, int]] | None:
    """Sum ``XᵀX`` over the non-pad input rows of ``linears`` during one replay of the current layer.

    With ``share``, a linear whose input is the very tensor (same object, unmodified) that another
    linear of the batch already read adds nothing: it shares that linear's sum. Returns the groups
    of names sharing one sum (in module order), the sums by the group's first name, and the tokens
    each linear saw (0 for one the layer never called: a zero Hessian); ``None`` if the sharing was not the same on every batch (then call again without it).
    """
    sums: dict[str, torch.Tensor] = {}
    owners: dict[str, list[str]] = {n: [] for n in linears}
    seen: list[tuple[torch.Tensor, int, str]] = []  # this batch: (input, its version, who summed it)
    batch: list[torch.Tensor | None] = [None]  # the token mask of the batch being replayed

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if calib.mask is not batch[0]:  # a new batch
                batch[0] = calib.mask
                seen.clear()
            if share:
                for tensor, version, owner in seen:
                    if tensor is x and x._version == version:
                        owners[name].append(owner)
                        return
            rows = x.reshape(-1, x.shape[-1])
            mask = calib.mask.reshape(-1)
            if mask.numel() != rows.shape[0]:
                raise RuntimeError(f"{name}: input has {rows.shape[0]} rows, token mask {mask.numel()}")
            rows = rows[mask].to(dtype)
            if name not in sums:
                sums[name] = torch.zeros(rows.shape[1], rows.shape[1], dtype=dtype, device=rows.device)
            sums[name].addmm_(rows.T, rows)
            owners[name].append(name)
            seen.append((x, x._version, name))

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in linears.items()]
    try:
        calib.replay()
    finally:
        for h in handles:
            h.remove()
    tokens = int(sum(int(m.sum()) for m in calib.masks))
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in linears:  # a linear the layer never called: its own group, a zero Hessian (RTN-like)
        groups.setdefault(tuple(owners[name]) or (name,), []).append(name)
    for key, names in groups.items():
        if len(set(key)) != 1 or key[0] not in names:  # owner changed between batches: no sharing
            return None
    out = {}
    for key, names in groups.items():
        size = linears[names[0]].in_features
        out[names[0]] = sums.get(
            key[0], torch.zeros(size, size, dtype=dtype, device=linears[names[0]].weight.device)
        )
    return list(groups.values()), out, {n: tokens if owners[n] else 0 for n in linears}


def _quantize_layer(
    calib: LayerInputs, linears: dict[str, nn.Linear], config: QuantizeConfig, report: QuantizeReport
) -> None:
    """Collect the input Hessians of ``linears`` over one replay of the current layer, then quantize them,
    the linears that share a Hessian as one stacked weight."""
    if not linears:
        return
    dtype = config.torch_dtype
    collected = _collect_hessians(calib, linears, dtype, share=True)
    if collected is None:
        collected = _collect_hessians(calib, linears, dtype, share=False)
    assert collected is not None
    groups, sums, tokens = collected
    for names in groups:
        label = _label(names)
        H = sums[names[0]].mul_(2.0 / max(tokens[names[0]], 1))
        if not torch.isfinite(H).all():
            raise ValueError(
                f"{label}: the Hessian of its inputs holds NaN/inf; the activations reaching it are not finite"
            )
        for name in names:
            _check_weight(name, linears[name].weight)
        W = (
            torch.cat([linears[n].weight.detach() for n in names])
            if len(names) > 1
            else linears[names[0]].weight.detach()
        )
        rtn = quantize_weight(W, config.bits, config.group_size, config.symmetric)
        if config.method == "gptq":
            q, s, z, _ = gptq_quantize_weight(W, H, config, name=label)
        elif config.method == "quantease":
            q, s, z, _ = quantease_quantize_weight(W, H, config, name=label)
        else:
            q, s, z = rtn
        row = 0
        for name in names:
            module = linears[name]
            rows = slice(row, row + module.out_features)
            row += module.out_features
            codes = (q[rows], s[rows], z[rows])
            errors = None
            if config.error_report:
                W_n = W[rows]
                rtn_hat = dequantize(rtn[0][rows], rtn[1][rows], rtn[2][rows], config.group_size).to(W.dtype)
                if config.method == "rtn":
                    (rtn_error,) = _relative_errors(W_n, [rtn_hat], H)
                    errors = (rtn_error, rtn_error)
                else:
                    w_hat = dequantize(*codes, config.group_size).to(W.dtype)
                    errors = tuple(_relative_errors(W_n, [w_hat, rtn_hat], H))  # type: ignore[assignment]
            _store(name, module, (codes[0].contiguous(), codes[1].contiguous(), codes[2].contiguous()),
                   config, report, tokens[name], errors)  # fmt: skip


def save_quantized(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    report_or_state: QuantizeReport | Mapping[str, QuantizedWeight],
    tokenizer: Any = None,
) -> Path:
    """Write the quantized ``model`` as a compressed-tensors checkpoint (safetensors only) in ``out_dir``.

    ``report_or_state``: the ``QuantizeReport`` of ``quantize_model`` (its summary is saved too, as
    ``quantization_report.json``) or just its ``quantized`` mapping (module name -> codes). Refuses
    if a quantized layer's weight no longer equals its dequantized codes (model changed since).
    ``tokenizer`` is saved alongside when given. Load it back with :func:`load_quantized`.
    """
    report = report_or_state if hasattr(report_or_state, "quantized") else None
    records = report.quantized if report is not None else dict(report_or_state)  # type: ignore[union-attr]
    for name, record in records.items():
        weight = model.get_submodule(name).weight.detach()
        if not torch.equal(weight, record.dequantize().to(device=weight.device, dtype=weight.dtype)):
            raise ValueError(
                f"{name}: the weight differs from its quantized codes; was the model changed after quantize_model?"
            )
    return write_checkpoint(
        model,
        out_dir,
        records,
        act_order=report.config.act_order if report is not None else False,
        report=report.to_dict() if report is not None else None,
        tokenizer=tokenizer,
    )
