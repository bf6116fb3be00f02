"""Post-training weight quantization (int8 / int4) of the decoder linears: GPTQ or round-to-nearest.

``quantize_model`` walks the decoder layers in order. For each layer it runs the calibration batches
through it (inputs computed by the already-quantized earlier layers), accumulates for every
``nn.Linear`` the Hessian ``H = 2 XᵀX / N`` of its inputs ``X [N, in]`` over the non-pad tokens
(float64), quantizes the weight ``W [out, in]`` with ``gptq_quantize_weight`` (layer-wise
reconstruction with error feedback, Frantar et al. 2022) or with plain round-to-nearest, and writes
the dequantized weight back in place (fake quantization: the in-memory model computes exactly what
the saved quantized model computes). ``save_quantized`` writes the integer codes in the
compressed-tensors ``pack-quantized`` format, which ``AutoModelForCausalLM.from_pretrained`` loads.

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


@dataclass
class QuantizeConfig:
    """Settings of ``quantize_model`` (validated on construction; ``group_size=-1`` means ``None``).

    ``ignore`` entries match full module names: a plain string by suffix (``"lm_head"``,
    ``"mlp.down_proj"``), a ``"re:<pattern>"`` string by ``re.search``. ``act_order`` processes the
    columns by decreasing Hessian diagonal with the group scales fixed beforehand from the original
    weight ("static groups"), so the groups stay contiguous and the saved format needs no ``g_idx``.
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    method: str = "gptq"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    ignore: tuple[str, ...] = ("lm_head",)

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
        check_choice("QuantizeConfig.method", self.method, ("gptq", "rtn"))
        check_float("QuantizeConfig.damp", self.damp, minimum=0.0, maximum=1.0, fix="e.g. 0.01")
        self.block_size = check_int("QuantizeConfig.block_size", self.block_size, minimum=1, fix="e.g. 128")
        self.act_order = check_bool("QuantizeConfig.act_order", self.act_order)
        ignore = self.ignore
        if not (isinstance(ignore, tuple) and all(valid_ignore_pattern(p) for p in ignore)):
            raise ValueError(
                f"QuantizeConfig.ignore={ignore!r}: must be a tuple of module-name suffixes or 're:<regex>' "
                "strings; fix: e.g. ('lm_head',)."
            )

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

    ``error`` is that of the method used, ``rtn_error`` that of round-to-nearest on the same inputs.
    """

    name: str
    shape: tuple[int, int]
    tokens: int
    error: float
    rtn_error: float


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
        return {
            "config": {**self.config.__dict__, "ignore": list(self.config.ignore)},
            "num_quantized_layers": len(self.layers),
            "num_quantized_params": self.num_quantized_params,
            "num_calibration_tokens": self.num_calibration_tokens,
            "seconds": round(self.seconds, 3),
            "mean_error": sum(r.error for r in self.layers) / n,
            "mean_rtn_error": sum(r.rtn_error for r in self.layers) / n,
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


def _qparams(w: torch.Tensor, bits: int, symmetric: bool, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Scale and zero point (float64, integer-valued zero) of ``w [..., n]`` over its last dim.

    The scale is rounded to ``dtype`` (the stored scale) before the zero point is derived from it.
    """
    qmin, qmax = _qrange(bits)
    lo = w.amin(-1).clamp(max=0)
    hi = w.amax(-1).clamp(min=0)
    scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2) if symmetric else (hi - lo) / (qmax - qmin)
    scale = scale.to(dtype)
    scale = torch.where(scale == 0, torch.finfo(dtype).eps, scale).double()
    zero = torch.zeros_like(scale) if symmetric else torch.round(qmin - lo / scale).clamp(qmin, qmax)
    return scale, zero


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


def gptq_quantize_weight(
    W: torch.Tensor, H: torch.Tensor, config: QuantizeConfig, name: str = "weight"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ: quantize ``W [out, in]`` column by column, spreading each column's error over the columns
    not yet quantized through the Cholesky factor of ``H⁻¹`` (``H [in, in]``, the input Hessian).

    Solves in float64 with lazy batch updates of ``config.block_size`` columns (rounded to a multiple
    of ``group_size`` so each group's scale is taken from fully updated columns, as in the unblocked
    algorithm). ``H`` is damped by ``damp * mean(diag H)``; columns never seen (zero diagonal) are
    rounded without feedback. Returns ``q``, ``scale``, ``zero`` as ``quantize_weight`` and the
    dequantized ``Ŵ [out, in]`` in ``W.dtype``.
    """
    out_f, in_f = W.shape
    if H.shape != (in_f, in_f):
        raise ValueError(f"{name}: Hessian shape {tuple(H.shape)} does not match in_features={in_f}")
    if not torch.isfinite(H).all():
        raise ValueError(f"{name}: the Hessian of the layer inputs holds NaN/inf (non-finite activations)")
    gs = _group(in_f, config.group_size, name)
    bits, sym = config.bits, config.symmetric
    W64 = W.detach().double().clone()
    H = H.detach().double().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(config.damp * H.diagonal().mean())
    # static groups: all scales from the original weight (per channel, or act_order)
    static = config.act_order or gs == in_f
    if static:
        scale_all, zero_all = _qparams(W64.reshape(out_f, in_f // gs, gs), bits, sym, W.dtype)
    else:
        scale_all = torch.empty(out_f, in_f // gs, dtype=torch.float64, device=W.device)
        zero_all = torch.empty_like(scale_all)
    order = torch.arange(in_f, device=W.device)
    if config.act_order:
        order = torch.argsort(H.diagonal(), descending=True, stable=True)
        W64, H = W64[:, order], H[order][:, order]
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
    block = config.block_size if static else max(1, config.block_size // gs) * gs
    Q = torch.empty_like(W64)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        W1, U1 = W64[:, i1:i2].clone(), U[i1:i2, i1:i2]
        E1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            j = i1 + i
            if not static and j % gs == 0:
                scale_all[:, j // gs], zero_all[:, j // gs] = _qparams(W1[:, i : i + gs], bits, sym, W.dtype)
            s, z = scale_all[:, group_of[j]], zero_all[:, group_of[j]]
            q = _round(W1[:, i], s, z, bits)
            Q[:, j] = q
            E1[:, i] = (W1[:, i] - (q - z) * s) / U1[i, i]
            W1[:, i:] -= E1[:, i : i + 1] * U1[i : i + 1, i:]
        W64[:, i2:] -= E1 @ U[i1:i2, i2:]
    if config.act_order:
        Q = Q[:, torch.argsort(order)]
    q_int, scale, zero = Q.to(torch.int8), scale_all.to(W.dtype), zero_all.to(torch.int8)
    return q_int, scale, zero, dequantize(q_int, scale, zero, config.group_size).to(W.dtype)


def _relative_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` from ``H ∝ XᵀX``: ``sqrt(tr(ΔHΔᵀ) / tr(WHWᵀ))``."""
    W64 = W.double()
    D = W64 - W_hat.double()
    num = float(((D @ H) * D).sum().clamp(min=0))
    den = float(((W64 @ H) * W64).sum().clamp(min=0))
    return math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)


# ----------------------------------------------------------------------------- model-level driver


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calibration: Iterable[Mapping[str, torch.Tensor]],
    config: QuantizeConfig | None = None,
) -> QuantizeReport:
    """Quantize every ``nn.Linear`` of the decoder layers (not embeddings, not ``config.ignore``) in place.

    ``calibration``: batches ``{"input_ids": [B, T], "attention_mask": [B, T] (optional)}``; pad
    positions (mask 0) are left out of the Hessians. Layers are processed in order, each on the
    outputs of the already-quantized previous ones. Each weight is replaced by its dequantized value;
    the integer form is kept in the returned report for ``save_quantized``.
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
    batches = read_calibration(calibration, device)

    was_training = model.training
    model.eval()
    report = QuantizeReport(config, [], 0, int(sum(int(m.sum()) for _, _, m in batches)), 0.0)
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


def _quantize_layer(
    calib: LayerInputs, linears: dict[str, nn.Linear], config: QuantizeConfig, report: QuantizeReport
) -> None:
    """Collect the input Hessians of ``linears`` over one replay of the current layer, then quantize them."""
    if not linears:
        return
    hessians = {
        n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=m.weight.device)
        for n, m in linears.items()
    }
    counts = dict.fromkeys(linears, 0)

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])
            mask = calib.mask.reshape(-1)
            if mask.numel() != x.shape[0]:
                raise RuntimeError(f"{name}: input has {x.shape[0]} rows, token mask {mask.numel()}")
            x = x[mask].double()
            hessians[name].addmm_(x.T, x)
            counts[name] += x.shape[0]

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in linears.items()]
    try:
        calib.replay()
    finally:
        for h in handles:
            h.remove()
    for name, module in linears.items():
        H = hessians[name].mul_(2.0 / max(counts[name], 1))
        if not torch.isfinite(H).all():
            raise ValueError(
                f"{name}: the Hessian of its inputs holds NaN/inf; the activations reaching it are not finite"
            )
        W = module.weight.detach()
        if not torch.isfinite(W).all():
            raise ValueError(f"{name}: the weight holds NaN/inf")
        q, s, z = quantize_weight(W, config.bits, config.group_size, config.symmetric)
        rtn_hat = dequantize(q, s, z, config.group_size).to(W.dtype)
        if config.method == "gptq":
            q, s, z, w_hat = gptq_quantize_weight(W, H, config, name=name)
        else:
            w_hat = rtn_hat
        rtn_error = _relative_error(W, rtn_hat, H)
        error = _relative_error(W, w_hat, H) if config.method == "gptq" else rtn_error
        module.weight.data.copy_(w_hat)
        report.quantized[name] = QuantizedWeight(q, s, z, config.bits, config.group_size, config.symmetric)
        report.layers.append(LayerReport(name, tuple(W.shape), counts[name], error, rtn_error))
        report.num_quantized_params += W.numel()


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
