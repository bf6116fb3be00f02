"""Teacher loading/preparation, vocabulary checks and last-hidden-state forwards (no full logits).

The fused KD loss needs each model's *last hidden states* and its lm_head weight, never the
``(B, T, V)`` logits. :func:`last_hidden_states` runs the model's own forward (so DDP and
DeepSpeed wrappers see a normal forward and sync gradients), with ``logits_to_keep`` set to an
empty index tensor so the lm_head projects zero positions, and reads the decoder body's
``last_hidden_state`` with a forward hook. ``use_cache=False`` always: packed batches need it
(the model only infers sample boundaries from ``position_ids`` without a cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from hf_cot_distill.trainers.kd_config import SectionKDConfig


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


def model_load_error(field: str, path: str, err: BaseException) -> ValueError:
    """Why ``from_pretrained(path, use_safetensors=True)`` failed, naming ``field`` and the fix.

    A folder with pickle weights only (``pytorch_model.bin``…) is named with its files and how
    to convert them; a path that is no folder is "not a local folder, and the Hub could not
    provide it" (saying so when offline mode is on).
    """
    from huggingface_hub import constants

    from hf_cot_distill.hub import PICKLE_SUFFIXES

    folder = Path(path)
    if folder.is_dir():
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
        if pickles and not any(f.endswith(".safetensors") for f in files):
            return ValueError(
                f"{field}={path!r}: the folder holds pickle weights only ({', '.join(pickles)}); "
                "hf-cot-distill loads safetensors only (unpickling can run arbitrary code). Fix: if you "
                'trust the file, convert it once: python -c "from transformers import AutoModelForCausalLM '
                f'as M; M.from_pretrained({path!r}, use_safetensors=False).save_pretrained({path!r})" '
                f"(writes model.safetensors), then delete {', '.join(pickles)}."
            )
        return ValueError(
            f"{field}={path!r}: could not load a safetensors model from this folder ({err}); fix: point it "
            "at a folder written by save_pretrained (config.json + *.safetensors)."
        )
    offline = " (offline mode: HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
    return ValueError(
        f"{field}={path!r}: not a local folder (nothing at {folder.absolute()}), and the Hub could not "
        f"provide it{offline}: {err}; fix: pass an existing model folder, or go online for a Hub model id."
    )


def load_causal_lm(path: str, field: str, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)``: never a
    pickle; a failure is a ``ValueError`` naming ``field`` (see :func:`model_load_error`)."""
    from huggingface_hub.errors import HFValidationError

    try:
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    except (OSError, HFValidationError) as err:
        raise model_load_error(field, path, err) from err


def load_teacher(args: SectionKDConfig) -> PreTrainedModel:
    """Load ``args.teacher_model_name_or_path`` (safetensors only) with ``args.teacher_dtype``
    and init kwargs."""
    kwargs = dict(args.teacher_model_init_kwargs or {})
    if args.teacher_dtype != "auto":
        kwargs.setdefault("dtype", getattr(torch, args.teacher_dtype))
    else:
        kwargs.setdefault("dtype", "auto")
    if kwargs.pop("use_safetensors", True) is not True:
        raise ValueError(
            "teacher_model_init_kwargs: use_safetensors other than True would load pickle "
            "weights; hf-cot-distill loads safetensors only. Fix: remove it and convert the teacher's weights."
        )
    return load_causal_lm(args.teacher_model_name_or_path, "teacher_model_name_or_path", **kwargs)


def freeze(model: nn.Module, disable_dropout: bool) -> nn.Module:
    """Eval mode, no gradients, optionally dropout 0."""
    model.eval()
    model.requires_grad_(False)
    if disable_dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return model


def prepare_teacher(teacher: nn.Module, trainer: Any) -> nn.Module:
    """Frozen teacher placed like TRL's GKDTrainer does: DeepSpeed (ZeRO-3 sharded) or on the device."""
    freeze(teacher, trainer.args.disable_dropout)
    if trainer.is_deepspeed_enabled:
        from trl.models import prepare_deepspeed  # TRL's helper: ZeRO-3 shards it, other stages run it whole

        return prepare_deepspeed(teacher, trainer.accelerator)
    return trainer.accelerator.prepare_model(teacher, evaluation_mode=True)


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

    With both tokenizers, :func:`hf_cot_distill.tokenizer_compat.check_tokenizer_compatibility`
    decides (it raises ``ValueError`` on a vocabulary / special-token / chat-template mismatch).
    Otherwise: ``len(student_tokenizer)`` if given, else the lm_head rows, which must then agree.
    """
    s_rows = lm_head_rows(student)
    t_rows = lm_head_rows(teacher) if teacher is not None else s_rows
    if student_tokenizer is not None and teacher_tokenizer is not None and teacher is not None:
        from hf_cot_distill.tokenizer_compat import check_tokenizer_compatibility

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
