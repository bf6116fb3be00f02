"""``hf-cot-distill train``: a recipe's three configs -> data, models, trainer, run, save, card.

``run_training(model_args, data_args, kd_args)`` is the whole job, read top-down; the CLI only
parses the recipe. Data preparation is :mod:`hf_cot_distill.pipelines.training_data`, the models and
the trainer :mod:`hf_cot_distill.pipelines.training_models`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hf_cot_distill.hub.cards import write_model_card
from hf_cot_distill.pipelines.cache_teacher import check_cache_matches_run
from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments
from hf_cot_distill.pipelines.training_data import (
    PreparedData,
    check_supervised_rows,
    pin_marker_lengths,
    prepare_data,
)
from hf_cot_distill.pipelines.training_models import (
    build_student,
    build_trainer,
    check_run_sources,
    load_tokenizers,
    peft_config,
    setup_distributed,
)
from hf_cot_distill.trainers.kd_config import SectionKDConfig
from hf_cot_distill.trainers.teacher_cache import TeacherCache


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    kd_args: SectionKDConfig,
    recipe_path: str | None = None,
    card_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train as the recipe says, save the model (safetensors), tokenizer, card and metrics.

    ``card_fields``: extra keyword arguments of :func:`hf_cot_distill.hub.cards.render_model_card`
    (e.g. ``compression``).

    Returns the final metrics (train loss, tokens, FLOPs, wall time, and eval results when
    there is an eval split).
    """
    start = time.perf_counter()
    check_run_sources(model_args, kd_args, data_args)  # a mistyped name: one line, before anything loads
    setup_distributed(kd_args)
    tokenizers = load_tokenizers(model_args, kd_args)
    data = prepare_data(data_args, tokenizers.student, tokenizers.source)
    pin_marker_lengths(kd_args, data_args, tokenizers.student)
    if kd_args.teacher_cache:  # the cache must be this run's: teacher, tokenizer, data, encoding
        check_cache_matches_run(
            TeacherCache(kd_args.teacher_cache), data, tokenizers.student, data_args, kd_args
        )
    teacher = kd_args.teacher_model_name_or_path is not None or kd_args.teacher_cache is not None
    kd_enabled = teacher and kd_args.kd_weight > 0
    check_supervised_rows(data, kd_args, kd_enabled)  # before the models load
    student = build_student(model_args, data, kd_args.teacher_model_name_or_path, seed=kd_args.seed)
    trainer = build_trainer(student, data, kd_args, tokenizers, peft_config(model_args))
    metrics = _train_and_evaluate(trainer, data, kd_args)
    metrics["wall_time_s"] = time.perf_counter() - start
    metrics["data_rows"] = data.rows  # rows read, dropped by the trace encoder (by case), used
    if kd_args.teacher_cache:
        metrics["teacher_cache"] = str(kd_args.teacher_cache)
    _save(trainer, tokenizers.student, kd_args)
    if trainer.is_world_process_zero():
        _write_card_and_metrics(
            trainer, data, metrics, model_args, data_args, kd_args, recipe_path, card_fields
        )
    return metrics


def _train_and_evaluate(trainer: Any, data: PreparedData, kd_args: SectionKDConfig) -> dict[str, Any]:
    """Train (resuming if asked), then the final evaluation: the CoT-ICL hook's last results, or
    ``trainer.evaluate()`` on the eval split."""
    result = trainer.train(resume_from_checkpoint=kd_args.resume_from_checkpoint or None)
    metrics = dict(result.metrics)
    cot_icl_eval = getattr(trainer, "cot_icl_callback", None)
    if cot_icl_eval is not None and cot_icl_eval.history:
        metrics.update({k: v for k, v in cot_icl_eval.history[-1].items() if k != "step"})
    elif data.eval is not None:
        metrics.update(trainer.evaluate())
    return metrics


def _save(trainer: Any, tokenizer: Any, kd_args: SectionKDConfig) -> None:
    """The model (safetensors), the tokenizer, and the arguments as JSON (no pickle in the folder)."""
    out = Path(kd_args.output_dir)
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    # Trainer pickles its arguments (training_args.bin); we keep a JSON copy instead so the
    # folder holds no pickle (hub/push.py refuses to publish pickles).
    (out / "training_args.bin").unlink(missing_ok=True)
    (out / "training_args.json").write_text(kd_args.to_json_string())


def _write_card_and_metrics(
    trainer: Any,
    data: PreparedData,
    metrics: dict[str, Any],
    model_args: ModelArguments,
    data_args: DataArguments,
    kd_args: SectionKDConfig,
    recipe_path: str | None,
    card_fields: dict[str, Any] | None,
) -> None:
    out = Path(kd_args.output_dir)
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
        truncation={
            "policy": fields.get("truncation_policy"),
            **fields.get("truncation_kwargs", {}),
            "max_length": data_args.max_length,
            "on_too_long": data_args.on_too_long,
            "data_rows": data.rows,
        },
        truncation_accounting={
            **trainer.truncation_accounting.to_dict(),
            "rows_dropped_before_training": data.dropped(),
        },
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
