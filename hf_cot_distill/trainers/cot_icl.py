"""CoT-ICL Lab meta-training: small Llama / Qwen2 models trained from scratch on generator rows.

The same :class:`SectionKDTrainer` without a teacher: CE weight 1 on the COT and ANSWER
sections (the rows' own ``labels`` turn CE off where a prompt strategy supervises nothing, e.g.
the inputs). :class:`CoTICLTrainer` adds the evaluation hook: a
:class:`hf_cot_distill.eval.callback.CoTICLEvalCallback` that decodes the eval view greedily
every ``eval_every_steps`` and logs answer / chain / per-position accuracy (with drop-k).

Example::

    cfg = CoTICLConfig(prompt_strategy="cot", num_tasks=2000)
    rows = generate_batch(cfg, range(cfg.num_tasks)).rows()
    model = cot_icl_model(cfg, architecture="llama", num_layers=4)
    trainer = CoTICLTrainer(model, cot_icl_training_args("out", max_steps=1000), cfg,
                            train_dataset=Dataset.from_list(rows), eval_rows=eval_rows)
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from hf_cot_distill.core.validation import check_choice, check_int
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from hf_cot_distill.trainers.kd_config import SectionKDConfig
from hf_cot_distill.trainers.kd_trainer import SectionKDTrainer

ARCHITECTURES: dict[str, tuple[type, type]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def cot_icl_model(
    config: CoTICLConfig,
    *,
    architecture: Literal["llama", "qwen2"] = "llama",
    num_layers: int = 4,
    hidden_size: int = 256,
    num_attention_heads: int = 8,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM over the generator's vocabulary (``config.vocab_size`` rows).

    The CoT-Recipe paper's models are Llama-style with 4 / 8 / 12 layers. ``pad_token_id`` is the
    strategy's reserved pad id (``V - 1``) for ``*_special_token`` strategies, else 0 (padding is
    masked either way).
    """
    check_choice("architecture", architecture, sorted(ARCHITECTURES))
    for name, value in (
        ("num_layers", num_layers),
        ("hidden_size", hidden_size),
        ("num_attention_heads", num_attention_heads),
    ):
        check_int(name, value, minimum=1)
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size: {hidden_size} is not a multiple of num_attention_heads={num_attention_heads}; fix: make it one."
        )
    special = config.special_tokens
    config_cls, model_cls = ARCHITECTURES[architecture]
    model_config = config_cls(
        vocab_size=config.vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=special.pad if special else 0,
        bos_token_id=special.bos if special else None,
        eos_token_id=special.eos if special else None,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return model_cls(model_config)


def cot_icl_training_args(output_dir: str, **overrides: Any) -> SectionKDConfig:
    """A :class:`SectionKDConfig` for meta-training: CE weight 1 on COT + ANSWER, no KD."""
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir, supervision_preset="cot+answer", ce_weight=1.0, kd_weight=0.0, report_to="none"
    )
    kwargs.update(overrides)
    return SectionKDConfig(**kwargs)


class CoTICLTrainer(SectionKDTrainer):
    """:class:`SectionKDTrainer` for CoT-ICL meta-training, with the CoT-ICL evaluation hook.

    Args:
        model: e.g. from :func:`cot_icl_model`.
        args: e.g. from :func:`cot_icl_training_args`.
        cot_icl_config: the generator config of the rows (the evaluation needs its vocabulary
            layout and special tokens).
        train_dataset: generator rows (``generate_batch(...).rows()`` or the datasets builder).
        eval_rows: eval-split rows; with them a ``CoTICLEvalCallback`` runs every
            ``eval_every_steps`` optimizer steps and at the end of training, for each
            ``drop_ks`` (think blocks dropped from k context examples).
        teacher_model: optional (distillation between CoT-ICL models); default none.
        **kwargs: passed to :class:`SectionKDTrainer`.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        args: SectionKDConfig,
        cot_icl_config: CoTICLConfig,
        *,
        train_dataset: Any = None,
        eval_rows: Sequence[dict] | None = None,
        eval_every_steps: int = 100,
        drop_ks: Sequence[int] = (0,),
        eval_batch_size: int = 16,
        teacher_model: PreTrainedModel | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(cot_icl_config, CoTICLConfig):
            raise TypeError(f"cot_icl_config: expected CoTICLConfig, got {type(cot_icl_config).__name__}.")
        rows_vocab = _teacher_vocab(model)
        if rows_vocab < cot_icl_config.vocab_size:
            raise ValueError(
                f"model: lm_head has {rows_vocab} rows < the generator's vocab_size {cot_icl_config.vocab_size}; "
                "fix: build it with cot_icl_model(cot_icl_config)."
            )
        super().__init__(model, teacher_model, args=args, train_dataset=train_dataset, **kwargs)
        self.cot_icl_config = cot_icl_config
        self.cot_icl_callback = None
        if eval_rows:
            from hf_cot_distill.eval.callback import CoTICLEvalCallback

            self.cot_icl_callback = CoTICLEvalCallback(
                self,
                cot_icl_config,
                eval_rows,
                eval_every_steps=eval_every_steps,
                drop_ks=drop_ks,
                batch_size=eval_batch_size,
            )
            self.add_callback(self.cot_icl_callback)


def _teacher_vocab(model: PreTrainedModel) -> int:
    from hf_cot_distill.models.heads import lm_head_rows

    return lm_head_rows(model)
