"""Validation and flattening of the fused KD inputs (errors name the field, the value and the fix)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hf_cot_distill.core.validation import check_int
from hf_cot_distill.losses.divergences import check_weights


@dataclass(frozen=True)
class FusedInputs:
    """Validated inputs with positions flattened: hidden ``(N, H)``, per-position ``(N,)``."""

    student_hidden: Tensor
    student_weight: Tensor
    student_bias: Tensor | None
    teacher_hidden: Tensor
    teacher_weight: Tensor
    teacher_bias: Tensor | None
    kd_weights: Tensor
    ce_labels: Tensor
    ce_weights: Tensor
    section_ids: Tensor | None
    vocab_size: int


def _check_float(field: str, t: object, dims: int | None = None) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        kind = f"{t.dtype} tensor" if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"{field}: expected a floating torch.Tensor, got {kind}.")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"{field}: expected {dims} dims, got shape {tuple(t.shape)}.")
    return t


def _check_linear(prefix: str, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    _check_float(f"{prefix}_hidden", hidden)
    _check_float(f"{prefix}_weight", weight, 2)
    if hidden.dim() < 2:
        raise ValueError(
            f"{prefix}_hidden: expected (..., H) with position dims, got shape {tuple(hidden.shape)}."
        )
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{prefix}_weight: shape {tuple(weight.shape)} has hidden size {weight.shape[1]} but "
            f"{prefix}_hidden has {hidden.shape[-1]}; pass the lm_head weight (V, H) of the same model."
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(
            f"{prefix}_weight: dtype {weight.dtype} != {prefix}_hidden dtype {hidden.dtype}; "
            "cast one of them (the lm_head product runs in one dtype)."
        )
    if bias is not None:
        _check_float(f"{prefix}_bias", bias, 1)
        if bias.shape[0] != weight.shape[0] or bias.dtype != weight.dtype:
            raise ValueError(
                f"{prefix}_bias: shape {tuple(bias.shape)} dtype {bias.dtype}; expected ({weight.shape[0]},) {weight.dtype}."
            )


def check_fused_inputs(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    *,
    kd_weights: Tensor,
    ce_labels: Tensor | None,
    ce_weights: Tensor | None,
    student_bias: Tensor | None,
    teacher_bias: Tensor | None,
    vocab_size: int | None,
    section_ids: Tensor | None,
    ignore_index: int,
    num_sections: int,
) -> FusedInputs:
    """Validate shapes, dtypes and values; flatten the position dims. See ``fused_linear_kd``."""
    _check_linear("student", student_hidden, student_weight, student_bias)
    _check_linear("teacher", teacher_hidden, teacher_weight, teacher_bias)
    positions = tuple(student_hidden.shape[:-1])
    if tuple(teacher_hidden.shape[:-1]) != positions:
        raise ValueError(
            f"teacher_hidden: positions {tuple(teacher_hidden.shape[:-1])} != student_hidden {positions}; "
            "run the teacher on the same (shifted) batch."
        )
    vs, vt = student_weight.shape[0], teacher_weight.shape[0]
    if vocab_size is None:
        if vs != vt:
            raise ValueError(
                f"vocab_size: None but lm_head rows differ (student {vs}, teacher {vt}); pass the real "
                "tokenizer length (len(tokenizer)) so padded rows are excluded."
            )
        vocab_size = vs
    vocab_size = check_int(
        "vocab_size",
        vocab_size,
        minimum=1,
        maximum=min(vs, vt),
        fix="pass the tokenizer length, len(tokenizer)",
    )
    check_weights("kd_weights", kd_weights, positions)
    n = student_hidden[..., 0].numel()
    if ce_labels is None:
        if ce_weights is not None:
            raise ValueError("ce_weights: given without ce_labels; pass ce_labels too, or drop ce_weights.")
        ce_labels = torch.full(positions, ignore_index, dtype=torch.long, device=student_hidden.device)
    if (
        not isinstance(ce_labels, Tensor)
        or ce_labels.dtype != torch.long
        or tuple(ce_labels.shape) != positions
    ):
        got = (
            f"{ce_labels.dtype} {tuple(ce_labels.shape)}"
            if isinstance(ce_labels, Tensor)
            else type(ce_labels).__name__
        )
        raise TypeError(f"ce_labels: expected an int64 tensor of shape {positions}, got {got}.")
    if ce_weights is None:
        ce_weights = (ce_labels != ignore_index).to(torch.float32)
    check_weights("ce_weights", ce_weights, positions)
    labels, cw = ce_labels.reshape(n), ce_weights.reshape(n)
    bad = (cw > 0) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"ce_labels: position {i} has label {int(labels[i])} with ce weight {float(cw[i])}; labels must be in "
            f"[0, {vocab_size}) where the weight is > 0 (set the weight to 0 for ignored positions)."
        )
    if section_ids is not None:
        if (
            not isinstance(section_ids, Tensor)
            or section_ids.dtype != torch.long
            or tuple(section_ids.shape) != positions
        ):
            raise TypeError(f"section_ids: expected an int64 tensor of shape {positions}.")
        if section_ids.numel() and bool(((section_ids < 0) | (section_ids >= num_sections)).any()):
            raise ValueError(f"section_ids: values must be Section ids in [0, {num_sections}).")
        section_ids = section_ids.reshape(n)
    return FusedInputs(
        student_hidden.reshape(n, student_hidden.shape[-1]), student_weight, student_bias,
        teacher_hidden.reshape(n, teacher_hidden.shape[-1]), teacher_weight, teacher_bias,
        kd_weights.reshape(n), labels, cw, section_ids, vocab_size,
    )  # fmt: skip
