"""Output heads, vocabulary checks and last-hidden-state forwards (no full logits).

The fused KD loss needs each model's *last hidden states* and its lm_head weight, never the
``(B, T, V)`` logits. :func:`last_hidden_states` runs the model's own forward (so DDP and
DeepSpeed wrappers see a normal forward and sync gradients), with ``logits_to_keep`` set to an
empty index tensor so the lm_head projects zero positions, and reads the decoder body's
``last_hidden_state`` with a forward hook. ``use_cache=False`` always: packed batches need it
(the model only infers sample boundaries from ``position_ids`` without a cache).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel


def unwrap_causal_lm(model: nn.Module) -> PreTrainedModel:
    """The ``*ForCausalLM`` inside DDP / DeepSpeed / PEFT wrappers."""
    while hasattr(model, "module") and not isinstance(model, PreTrainedModel):  # DDP, DeepSpeedEngine
        model = model.module
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model: expected a transformers *ForCausalLM (maybe wrapped), got {type(model).__name__}."
        )
    return model


def output_head(model: nn.Module) -> nn.Module:
    """The lm_head module (its frozen base layer when LoRA wraps it)."""
    head = unwrap_causal_lm(model).get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise TypeError(f"model: {type(model).__name__} has no lm_head (get_output_embeddings() is None).")
    return getattr(head, "base_layer", head)


def lm_head_params(model: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(weight (V, H), bias (V,) or None)`` of the model's lm_head (tied or not)."""
    head = output_head(model)
    return head.weight, getattr(head, "bias", None)


def call_as_module_forward(module: nn.Module, fn: Any, hidden: Tensor) -> Any:
    """Run ``fn(hidden)`` as ``module``'s forward, so the module's hooks wrap it.

    ``fn`` returns a :class:`FusedKDOutput`; its differentiable ``loss`` is what the module
    "outputs" (DeepSpeed ZeRO-3 attaches its backward gathering to module outputs), and the
    whole output is returned with that hooked loss in place.
    """
    captured: dict[str, Any] = {}

    def forward(x: Tensor) -> Tensor:
        captured["out"] = fn(x)
        return captured["out"].loss

    module.forward = forward  # instance attribute shadows the class method for this call only
    try:
        loss = module(hidden)
    finally:
        del module.forward
    return captured["out"]._replace(loss=loss)


def hidden_size(model: nn.Module) -> int:
    return int(unwrap_causal_lm(model).config.get_text_config().hidden_size)


def last_hidden_states(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """``(B, T, H)`` last hidden states (after the final norm) from ``model``'s own forward.

    ``inputs``: ``input_ids`` ``(B, T)`` long and optionally ``attention_mask`` / ``position_ids``.
    The lm_head runs on zero positions (``logits_to_keep`` = empty index tensor).
    """
    body = unwrap_causal_lm(model).get_decoder()
    captured: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured["h"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = body.register_forward_hook(hook)
    try:
        empty = torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device)
        model(**inputs, use_cache=False, logits_to_keep=empty)
    finally:
        handle.remove()
    if "h" not in captured:
        raise RuntimeError(
            f"{type(body).__name__}: the decoder body did not run; cannot read its hidden states."
        )
    return captured["h"]


def lm_head_rows(model: nn.Module) -> int:
    weight, _ = lm_head_params(model)
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def resolve_vocab_size(
    student: nn.Module,
    teacher: nn.Module | None,
    student_tokenizer: Any | None,
    teacher_tokenizer: Any | None,
) -> int:
    """The real shared vocabulary size; lm_head rows beyond it are padding (excluded from the loss).

    With both tokenizers, :func:`hf_cot_distill.models.tokenizer_compat.check_tokenizer_compatibility`
    decides (it raises ``ValueError`` on a vocabulary / special-token / chat-template mismatch).
    Otherwise: ``len(student_tokenizer)`` if given, else the lm_head rows, which must then agree.
    """
    s_rows = lm_head_rows(student)
    t_rows = lm_head_rows(teacher) if teacher is not None else s_rows
    if student_tokenizer is not None and teacher_tokenizer is not None and teacher is not None:
        from hf_cot_distill.models.tokenizer_compat import check_tokenizer_compatibility

        report = check_tokenizer_compatibility(
            teacher_tokenizer, student_tokenizer, teacher_vocab_rows=t_rows, student_vocab_rows=s_rows
        )
        vocab = int(report.vocab_size)
    elif student_tokenizer is not None:
        vocab = len(student_tokenizer)
    elif s_rows != t_rows:
        raise ValueError(
            f"teacher_model: lm_head has {t_rows} rows but the student's has {s_rows}, and no tokenizer says which "
            "rows are real; fix: pass processing_class (and teacher_processing_class) so padded rows can be "
            "excluded, or use a teacher with the student's vocabulary."
        )
    else:
        vocab = s_rows
    if not 1 <= vocab <= min(s_rows, t_rows):
        raise ValueError(
            f"processing_class: tokenizer has {vocab} tokens but the lm_head rows are student {s_rows}, teacher "
            f"{t_rows}; fix: use a tokenizer that matches both models (teacher and student must share it)."
        )
    return vocab
