"""Training models: the tokenizers, the student (loaded, built from a config, or made of the
teacher's layers), the PEFT adapter config, and the trainer that joins them with the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_cot_distill.core.validation import check_int
from hf_cot_distill.models.loading import check_source, has_tokenizer_files
from hf_cot_distill.pipelines.recipe import ModelArguments
from hf_cot_distill.pipelines.training_data import PreparedData
from hf_cot_distill.trainers.kd_config import SectionKDConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


@dataclass
class Tokenizers:
    """The student's tokenizer (``None`` for token-id data), where it was looked for, and the
    teacher's (``None`` unless both models have one: then their compatibility is checked)."""

    student: Any
    source: str | None
    teacher: Any = None


def load_tokenizers(model_args: ModelArguments, kd_args: SectionKDConfig) -> Tokenizers:
    """The run's tokenizers. A student made of the teacher's layers shares its tokenizer; a run
    from a teacher cache loads no teacher tokenizer (the cache records the tokenizer it was built
    with, checked against the student's)."""
    check_run_sources(model_args, kd_args)
    tokenizer = load_tokenizer(model_args)
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    teacher_path = kd_args.teacher_model_name_or_path
    if model_args.student_from_teacher_layers and tokenizer is None and teacher_path:
        return Tokenizers(load_tokenizer(model_args, teacher_path), teacher_path)
    if kd_args.teacher_cache or not teacher_path or tokenizer is None:
        return Tokenizers(tokenizer, source)  # a cached run loads no teacher: its tokenizer is not needed
    same = (
        source is not None
        and Path(source).is_dir()
        and Path(source).resolve() == Path(teacher_path).resolve()
    )
    return Tokenizers(tokenizer, source, tokenizer if same else load_tokenizer(model_args, teacher_path))


def check_run_sources(model_args: ModelArguments, kd_args: SectionKDConfig, data_args: Any = None) -> None:
    """Every model, tokenizer and dataset name of a run resolved up front (local or Hub), so a
    typo is one line at once, not a traceback after Hub retries."""
    check_source(model_args.model_name_or_path, "model_name_or_path")
    check_source(model_args.tokenizer_name_or_path, "tokenizer_name_or_path")
    check_source(kd_args.teacher_model_name_or_path, "teacher_model_name_or_path")
    if data_args is not None:
        check_source(data_args.dataset_name, "dataset_name")


def load_tokenizer(model_args: ModelArguments, path: str | None = None) -> Any:
    from transformers import AutoTokenizer

    name = path or model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name is None:
        return None
    if Path(name).is_dir() and not has_tokenizer_files(name):
        # A local model folder without a tokenizer (a CoT-ICL model trains on token ids): none.
        # (AutoTokenizer would otherwise build an empty one from the config alone.)
        return None
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=model_args.trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_student(
    model_args: ModelArguments, data: PreparedData, teacher_path: str | None = None, seed: int = 0
) -> torch.nn.Module:
    """Load the student (safetensors only), build it from ``model_config`` (random init seeded
    with ``seed``, the training seed), or from the teacher's layers
    ``model_args.student_from_teacher_layers`` (``teacher_path``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_args.student_from_teacher_layers is not None:
        from hf_cot_distill.models.loading import model_load_error
        from hf_cot_distill.models.student_init import init_student_from_teacher

        if not teacher_path:
            raise ValueError(
                "student_from_teacher_layers needs the teacher; fix: set teacher_model_name_or_path "
                "to a local safetensors folder."
            )
        try:
            student = init_student_from_teacher(teacher_path, model_args.student_from_teacher_layers)
        except OSError as err:
            raise model_load_error("teacher_model_name_or_path", teacher_path, err) from err
        if model_args.dtype != "auto":  # "auto" keeps the teacher's dtype
            student = student.to(_DTYPES[model_args.dtype])
        return student.train()
    if model_args.init_from_scratch:
        cfg = dict(model_args.model_config_dict())
        gen = data.generator_config
        if gen is not None and hasattr(gen, "vocab_size"):
            fix = f"raise it to at least the generator's vocab_size={gen.vocab_size}, or leave it unset"
            check_int(
                "model_config.vocab_size",
                cfg.setdefault("vocab_size", gen.vocab_size),
                minimum=gen.vocab_size,
                fix=fix,
            )
            special = gen.special_tokens
            cfg.setdefault("pad_token_id", special.pad if special else 0)
            if special is not None:
                cfg.setdefault("bos_token_id", special.bos)
                cfg.setdefault("eos_token_id", special.eos)
        model_type = cfg.pop("model_type")
        config = AutoConfig.for_model(model_type, **cfg)
        torch.manual_seed(seed)  # seeds differ in the initialisation too, not only the data order
        return AutoModelForCausalLM.from_config(config, attn_implementation=model_args.attn_implementation)
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (or init_from_scratch with model_config).")
    from hf_cot_distill.models.loading import load_causal_lm

    return load_causal_lm(
        model_args.model_name_or_path,
        "model_name_or_path",
        revision=model_args.model_revision,
        dtype=_DTYPES[model_args.dtype],
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=model_args.trust_remote_code,
    )


def peft_config(model_args: ModelArguments) -> Any:
    if not model_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def build_trainer(
    student: torch.nn.Module, data: PreparedData, kd_args: SectionKDConfig, tokenizers: Tokenizers, peft: Any
) -> Any:
    """A :class:`CoTICLTrainer` for generated CoT-ICL data (greedy accuracy on up to 64 eval tasks,
    every ``eval_steps`` or once at the end), else a :class:`SectionKDTrainer`."""
    from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
    from hf_cot_distill.trainers import SectionKDTrainer
    from hf_cot_distill.trainers.cot_icl import CoTICLTrainer

    common = dict(
        args=kd_args,
        train_dataset=data.train,
        processing_class=tokenizers.student,
        teacher_processing_class=tokenizers.teacher,
        peft_config=peft,
    )
    if isinstance(data.generator_config, CoTICLConfig):
        eval_rows = data.eval.to_list()[:64] if data.eval is not None else None
        every = int(kd_args.eval_steps) if kd_args.eval_steps else max(kd_args.max_steps, 1)
        return CoTICLTrainer(
            student,
            cot_icl_config=data.generator_config,
            eval_rows=eval_rows,
            eval_every_steps=every,
            **common,
        )
    return SectionKDTrainer(student, eval_dataset=data.eval, **common)


def setup_distributed(args: Any) -> None:
    """Set up the (distributed) device state of ``args`` before any model is built.

    Under ZeRO-3, ``from_pretrained`` / model construction partitions weights through
    ``deepspeed.zero.Init``, which needs the process group (else it sees world size 1 and
    rejects the batch sizes). accelerate's CPU path starts torch.distributed (gloo) but not
    deepspeed.comm, which zero.Init reads the world size from: attach it to that group.
    """
    _ = args.device
    if args.deepspeed and torch.distributed.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
