"""``hf-cot-distill train``: a recipe's three configs -> data, models, trainer, run, save, card.

``run_training(model_args, data_args, kd_args)`` is the whole job; the CLI only parses the
recipe. Data comes from a dataset folder / Hub id (reasoning traces in any supported layout,
encoded with section ids through the tokenizer's offsets, or already tokenized rows) or from
the generator (``dataset_name: generator:<named config or yaml>``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from hf_cot_distill.recipe import DataArguments, ModelArguments
from hf_cot_distill.trainers.kd_config import SectionKDConfig

logger = logging.getLogger(__name__)
GENERATOR_PREFIX = "generator:"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


@dataclass
class PreparedData:
    """The encoded splits, plus what produced them (for the card and the eval hook)."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    generator_config: Any = None  # CoTICLConfig / SymbolicConfig when generated
    trace_stats: dict[str, int] | None = None
    description: str = ""


def _limit(ds: datasets.Dataset | None, n: int | None) -> datasets.Dataset | None:
    if ds is None or n is None:
        return ds
    return ds.select(range(min(n, len(ds))))


def _generated(data_args: DataArguments) -> PreparedData:
    from hf_cot_distill.data.builder import generate_table, num_tasks_for, resolve_config
    from hf_cot_distill.data.cot_icl_lab import CoTICLConfig

    name, config = resolve_config(data_args.dataset_name[len(GENERATOR_PREFIX) :])
    overrides = {}
    if data_args.generator_num_tasks is not None:
        overrides["num_tasks"] = data_args.generator_num_tasks
    if data_args.generator_num_eval_tasks is not None:
        overrides["num_eval_tasks"] = data_args.generator_num_eval_tasks
    config = dataclasses.replace(config, **overrides)
    if not isinstance(config, CoTICLConfig):
        raise ValueError(
            f"dataset_name={data_args.dataset_name!r}: only CoT-ICL Lab generator configs train directly on "
            "token ids; export symbolic tasks with `hf-cot-distill generate` and train on the folder "
            "(dataset_format: messages) with a tokenizer."
        )
    splits = {}
    for split in ("train", "eval"):
        n = num_tasks_for(config, split)
        splits[split] = (
            datasets.Dataset(datasets.table.InMemoryTable(generate_table(config, 0, n, split))) if n else None
        )
    return PreparedData(splits["train"], splits["eval"], config, None, f"generated: {name}")


def _encoded(data_args: DataArguments, tokenizer: Any) -> PreparedData:
    from hf_cot_distill.data.formats import MARKER_PRESETS, detect_format
    from hf_cot_distill.data.trace_encoding import ReasoningTraceEncoder, encode_dataset

    raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config)
    if data_args.dataset_train_split not in raw:
        raise ValueError(
            f"dataset_train_split={data_args.dataset_train_split!r} is not in {data_args.dataset_name} "
            f"(splits: {list(raw)}); set dataset_train_split."
        )
    if data_args.dataset_eval_split is not None and data_args.dataset_eval_split not in raw:
        raise ValueError(
            f"dataset_eval_split={data_args.dataset_eval_split!r} is not in {data_args.dataset_name} "
            f"(splits: {list(raw)}); set dataset_eval_split or remove it."
        )
    train = raw[data_args.dataset_train_split]
    evals = raw[data_args.dataset_eval_split] if data_args.dataset_eval_split else None
    fmt = data_args.dataset_format
    columns = set(train.column_names)
    if fmt == "tokenized" or (fmt == "auto" and {"input_ids", "section_ids"} <= columns):
        return PreparedData(train, evals, None, None, f"{data_args.dataset_name} (tokenized)")
    if tokenizer is None:
        raise ValueError(
            f"{data_args.dataset_name} holds text ({sorted(columns)}); set model_name_or_path or "
            "tokenizer_name_or_path so it can be tokenized."
        )
    fmt = detect_format(train.column_names) if fmt == "auto" else fmt
    encoder = ReasoningTraceEncoder(
        tokenizer=tokenizer,
        source_format=fmt,
        source_markers=MARKER_PRESETS[data_args.source_markers],
        max_length=data_args.max_length,
        on_too_long=data_args.on_too_long,
        on_invalid="drop",
    )
    kwargs = {"num_proc": data_args.dataset_num_proc} if data_args.dataset_num_proc else {}
    train, stats = encode_dataset(train, encoder, **kwargs)
    if evals is not None:
        evals, eval_stats = encode_dataset(evals, encoder, **kwargs)
        stats = stats + eval_stats
    logger.info("trace encoding: %s", stats.report())
    return PreparedData(train, evals, None, dict(stats.counts), f"{data_args.dataset_name} ({fmt})")


def prepare_data(data_args: DataArguments, tokenizer: Any) -> PreparedData:
    """Load or generate, encode, and cap the splits."""
    if not data_args.dataset_name:
        raise ValueError("dataset_name is required: a dataset folder / Hub id, or generator:<config>.")
    if data_args.dataset_name.startswith(GENERATOR_PREFIX):
        data = _generated(data_args)
    else:
        data = _encoded(data_args, tokenizer)
    data.train = _limit(data.train, data_args.max_train_samples)
    data.eval = _limit(data.eval, data_args.max_eval_samples)
    if len(data.train) == 0:
        raise ValueError(f"{data.description}: no training rows left (after encoding and max_train_samples).")
    return data


def load_tokenizer(model_args: ModelArguments, path: str | None = None) -> Any:
    from transformers import AutoTokenizer

    name = path or model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name is None:
        return None
    if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in _TOKENIZER_FILES):
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
        from hf_cot_distill.student_init import init_student_from_teacher
        from hf_cot_distill.trainers._teacher import model_load_error

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
            vocab = cfg.setdefault("vocab_size", gen.vocab_size)
            if vocab < gen.vocab_size:
                raise ValueError(
                    f"model_config.vocab_size={vocab} < the generator's vocab_size={gen.vocab_size}; raise it."
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
    from hf_cot_distill.trainers._teacher import load_causal_lm

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


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    kd_args: SectionKDConfig,
    recipe_path: str | None = None,
    card_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train as the recipe says, save the model (safetensors), tokenizer, card and metrics.

    ``card_fields``: extra keyword arguments of :func:`hf_cot_distill.cards.render_model_card`
    (e.g. ``compression``).

    Returns the final metrics (train loss, tokens, FLOPs, wall time, and eval results when
    there is an eval split).
    """
    from hf_cot_distill.cards import write_model_card
    from hf_cot_distill.data.cot_icl_lab import CoTICLConfig
    from hf_cot_distill.trainers import SectionKDTrainer
    from hf_cot_distill.trainers.cot_icl import CoTICLTrainer

    start = time.perf_counter()
    setup_distributed(kd_args)
    tokenizer = load_tokenizer(model_args)
    teacher_tokenizer = None
    if model_args.student_from_teacher_layers and tokenizer is None and kd_args.teacher_model_name_or_path:
        # A student made of the teacher's layers shares its tokenizer (None if its folder has none).
        tokenizer = load_tokenizer(model_args, kd_args.teacher_model_name_or_path)
    elif kd_args.teacher_model_name_or_path and tokenizer is not None:
        teacher_tokenizer = load_tokenizer(model_args, kd_args.teacher_model_name_or_path)
    data = prepare_data(data_args, tokenizer)
    student = build_student(model_args, data, kd_args.teacher_model_name_or_path, seed=kd_args.seed)
    common = dict(
        args=kd_args,
        train_dataset=data.train,
        processing_class=tokenizer,
        teacher_processing_class=teacher_tokenizer,
        peft_config=peft_config(model_args),
    )
    if isinstance(data.generator_config, CoTICLConfig):
        eval_rows = data.eval.to_list()[:64] if data.eval is not None else None
        # eval_steps (if set) also paces the CoT-ICL accuracy; otherwise once, at the end.
        every = int(kd_args.eval_steps) if kd_args.eval_steps else max(kd_args.max_steps, 1)
        trainer = CoTICLTrainer(
            student,
            cot_icl_config=data.generator_config,
            eval_rows=eval_rows,
            eval_every_steps=every,
            **common,
        )
    else:
        trainer = SectionKDTrainer(student, eval_dataset=data.eval, **common)
    result = trainer.train(resume_from_checkpoint=kd_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    cot_icl_eval = getattr(trainer, "cot_icl_callback", None)
    if cot_icl_eval is not None and cot_icl_eval.history:
        metrics.update({k: v for k, v in cot_icl_eval.history[-1].items() if k != "step"})
    elif data.eval is not None:
        metrics.update(trainer.evaluate())
    metrics["wall_time_s"] = time.perf_counter() - start
    out = Path(kd_args.output_dir)
    trainer.save_model(str(out))
    if tokenizer is not None and trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
    if trainer.is_world_process_zero():
        # Trainer pickles its arguments (training_args.bin); we keep a JSON copy instead so the
        # folder holds no pickle (hub.py refuses to publish pickles).
        (out / "training_args.bin").unlink(missing_ok=True)
        (out / "training_args.json").write_text(kd_args.to_json_string())
    if trainer.is_world_process_zero():
        fields = trainer.model_card_fields
        write_model_card(
            out,
            model_name=out.name,
            base_model=model_args.model_name_or_path or kd_args.teacher_model_name_or_path,
            teacher=fields.get("teacher"),
            datasets=[data.description],
            recipe_name=Path(recipe_path).name if recipe_path else None,
            recipe=_recipe_summary(model_args, data_args, kd_args),
            supervision=fields.get("supervision"),
            objective=fields.get("objective"),
            truncation={"policy": fields.get("truncation_policy"), **fields.get("truncation_kwargs", {})},
            truncation_accounting=trainer.truncation_accounting,
            compute={
                "tokens_forwarded": fields.get("tokens_forwarded"),
                "flops_counted": fields.get("flops_counted"),
                "peak_memory_mb": fields.get("peak_memory_mb"),
                "wall_time_s": metrics["wall_time_s"],
            },
            eval_results={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            **(card_fields or {}),
        )
        (out / "train_metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2, sort_keys=True))
        (out / "log_history.json").write_text(json.dumps(_jsonable(trainer.state.log_history), indent=1))
    return metrics


def _recipe_summary(model_args: ModelArguments, data_args: DataArguments, kd_args: SectionKDConfig) -> dict:
    keys = (
        "teacher_model_name_or_path divergence temperature supervision_preset ce_weight kd_weight "
        "truncation_policy kd_mode learning_rate max_steps num_train_epochs per_device_train_batch_size "
        "gradient_accumulation_steps seed"
    ).split()
    summary = {k: getattr(kd_args, k) for k in keys}
    summary.update(
        model_name_or_path=model_args.model_name_or_path,
        use_peft=model_args.use_peft,
        dataset_name=data_args.dataset_name,
        max_length=data_args.max_length,
    )
    return summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
