"""The frozen teacher of online KD: loaded (safetensors only) and placed like TRL's GKDTrainer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_cot_distill.models.loading import load_causal_lm
from hf_cot_distill.trainers.kd_config import SectionKDConfig


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
