"""``hf-cot-distill cache-teacher``: run a recipe's teacher once over its encoded data, store targets.

The data goes through the very code path of ``train`` (:func:`~hf_cot_distill.pipelines.training_data.prepare_data`:
same encoding, markers, ``max_length`` and row drops), so a cache and a run of the same recipe see
the same rows. Shards are built by every process of a ``torchrun`` / ``accelerate launch`` run
(shard ``i`` on rank ``i % world_size``) and a re-run with the same ``--out`` resumes: complete
shards are kept, a half-written one never exists (written under a temporary name, then renamed).
``cache_info.json`` says ``complete: true`` only once every shard is there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hf_cot_distill.core.outputs import check_output_dir, claim_output_dir
from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments
from hf_cot_distill.pipelines.training_data import PreparedData, prepare_data
from hf_cot_distill.pipelines.training_models import load_tokenizers, setup_distributed
from hf_cot_distill.trainers.kd_config import SectionKDConfig
from hf_cot_distill.trainers.teacher_cache import (
    CACHE_INFO,
    FORMAT_VERSION,
    CacheSettings,
    TeacherCache,
    build_flops,
    build_shards,
    count_tokens,
    fingerprint_model_folder,
    fingerprint_rows,
    fingerprint_tokenizer,
    iter_shard_files,
    publish_shards,
    settings_dict,
    shard_plan,
    shard_stats,
    write_info,
)

# The data settings a cache depends on: a run must use the same (compared field by field).
ENCODING_FIELDS = (
    "dataset_name",
    "dataset_config",
    "dataset_train_split",
    "dataset_format",
    "source_markers",
    "render_markers",
    "max_length",
    "on_too_long",
    "on_empty_cot",
    "on_empty_answer",
    "max_train_samples",
    "generator_num_tasks",
)


def encoding_settings(data_args: DataArguments) -> dict[str, Any]:
    return {k: getattr(data_args, k, None) for k in ENCODING_FIELDS}


def teacher_fingerprint(path: str | None) -> str | None:
    return fingerprint_model_folder(path) if path and Path(path).is_dir() else None


def default_sections(kd_args: SectionKDConfig) -> tuple[str, ...]:
    """The sections the recipe distils (KD weight > 0): what a cache for it must hold."""
    from hf_cot_distill.core.sections import SECTION_NAMES

    policy = kd_args.build_supervision(True)
    names = tuple(
        SECTION_NAMES[s] for s in range(1, len(SECTION_NAMES)) if policy.for_section(s).kd_weight > 0
    )
    if not names:
        raise ValueError(
            f"supervision_preset={kd_args.supervision_preset!r} with kd_weight={kd_args.kd_weight!r} distils no "
            "section: nothing to cache; fix: kd_weight > 0, or name the sections with --positions."
        )
    return names


def _run_info(
    data: PreparedData, tokenizer: Any, data_args: DataArguments, kd_args: SectionKDConfig, vocab_size: int
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "teacher": kd_args.teacher_model_name_or_path,
        "teacher_fingerprint": teacher_fingerprint(kd_args.teacher_model_name_or_path),
        "tokenizer_fingerprint": fingerprint_tokenizer(tokenizer),
        "data_fingerprint": fingerprint_rows(data.train),
        "data_description": data.description,
        "rows": len(data.train),
        "encoding": encoding_settings(data_args),
        "vocab_size": vocab_size,
    }


def _differences(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"{k}: cache {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


PENDING_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# Unfinished teacher cache

`hf-cot-distill cache-teacher` is building this cache (or was interrupted): the shards built so far
are in the hidden `.partial/` folder, and `load_dataset` finds no data here until every shard is
built. Re-run the same command with the same `--out` to resume; this card is then replaced.
"""


def _write_pending_card(out: Path) -> None:
    """A card whose ``data_files`` (``data/``) do not exist until the build is published: loading an
    unfinished cache is an error instead of a dataset made of ``cache_info.json``."""
    (out / "README.md").write_text(PENDING_CARD)


def _prepare_out(out: Path, info: dict[str, Any]) -> bool:
    """Check ``out`` (main process): new/empty, or a cache of these very settings (resume).
    Returns True when that cache is already complete."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; fix: give a folder (missing or empty) for the cache.")
    info_file = out / CACHE_INFO
    if info_file.is_file():
        import json

        old = json.loads(info_file.read_text())
        keys = tuple(k for k in info if k not in ("complete", "stats"))
        diff = _differences(old, info, keys)
        if diff:
            raise ValueError(
                f"--out {out} holds a teacher cache built with other settings ({'; '.join(diff)}); fix: another --out, "
                "or delete that folder."
            )
        return bool(old.get("complete"))
    return False


def _placed(teacher: Any, kd_args: SectionKDConfig) -> Any:
    """The frozen teacher placed as in training (:func:`~hf_cot_distill.trainers.teacher.prepare_teacher`):
    under DeepSpeed (``--deepspeed zero3.json``) sharded by ZeRO-3, else on the device. A bare
    ``transformers.Trainer`` over the teacher provides the accelerator and DeepSpeed plugin; it
    never trains."""
    from transformers import Trainer

    from hf_cot_distill.trainers.teacher import prepare_teacher

    host = Trainer(model=teacher, args=kd_args)
    return prepare_teacher(teacher, host)


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def run_cache_teacher(
    model_args: ModelArguments,
    data_args: DataArguments,
    kd_args: SectionKDConfig,
    settings: CacheSettings,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> Path:
    """Build (or resume) the teacher cache of a recipe in ``out_dir``; returns the folder."""
    import torch

    from hf_cot_distill.hub.cards import render_teacher_cache_card
    from hf_cot_distill.models import heads
    from hf_cot_distill.models.compute import body_parameter_count
    from hf_cot_distill.trainers.teacher import load_teacher

    if not kd_args.teacher_model_name_or_path:
        raise ValueError(
            "teacher_model_name_or_path: the teacher to cache is required (a local safetensors folder)."
        )
    out = Path(out_dir)
    inputs = [kd_args.teacher_model_name_or_path, model_args.model_name_or_path, data_args.dataset_name]
    check_output_dir(out, "cache-teacher", inputs=inputs)  # before any model loads
    setup_distributed(kd_args)
    tokenizers = load_tokenizers(model_args, kd_args)
    data = prepare_data(data_args, tokenizers.student, tokenizers.source)
    teacher = load_teacher(kd_args)
    vocab_size = heads.resolve_vocab_size(teacher, teacher, tokenizers.student, tokenizers.teacher)
    teacher_sizes = (body_parameter_count(teacher), heads.hidden_size(teacher))
    teacher = _placed(teacher, kd_args)
    info = _run_info(data, tokenizers.student, data_args, kd_args, vocab_size)
    info["settings"] = settings_dict(settings)
    info["shards"] = len(shard_plan(len(data.train), settings.rows_per_shard))
    done = False
    with kd_args.main_process_first(local=False, desc="teacher cache folder"):
        if kd_args.process_index == 0:
            done = _prepare_out(out, info)
            if not done:
                inputs = [
                    kd_args.teacher_model_name_or_path,
                    model_args.model_name_or_path,
                    data_args.dataset_name,
                ]
                claim_output_dir(out, "cache-teacher", inputs=inputs, overwrite=(out / CACHE_INFO).is_file())
                write_info(out, {**info, "complete": False})
                _write_pending_card(out)
    if done:
        if kd_args.process_index == 0:
            print(f"{out}: the teacher cache is complete already (nothing to do)")
        return out
    pad = tokenizers.student.pad_token_id if tokenizers.student is not None else 0
    with torch.no_grad():
        build_shards(
            teacher,
            data.train,
            out,
            settings,
            vocab_size,
            rank=kd_args.process_index,
            world_size=kd_args.world_size,
            pad_token_id=int(pad or 0),
            progress=progress and not kd_args.disable_tqdm,
        )
    _barrier()
    if kd_args.process_index == 0:
        publish_shards(out)  # every shard is there: .partial/data -> data, one rename
        stats = shard_stats(out, settings, vocab_size)
        files = sum(p.stat().st_size for p in iter_shard_files(out))
        n = max(stats.positions, 1)
        tokens = count_tokens(data.train)
        info["stats"] = {
            # what building it cost, in the trainer's counted FLOPs (a run trained from the cache
            # counts no teacher FLOPs: reports add a share of these)
            "tokens_forwarded": tokens,
            "build_flops": build_flops(*teacher_sizes, vocab_size, tokens, stats.positions),
            "positions": stats.positions,
            "positions_by_section": {
                k: v for k, v in stats.positions_by_section.items() if k in settings.sections
            },
            "bytes_per_position": stats.payload_bytes / n,
            "file_bytes_per_position": files / n,
            "targets_per_position": stats.targets / n,
            "tail_mass_mean": stats.tail_mass_sum / n,
            "tail_mass_max": stats.tail_mass_max,
        }
        render_teacher_cache_card(info).save(out / "README.md")
        write_info(out, {**info, "complete": True})
        TeacherCache(out)  # read back once: every shard present and readable
    _barrier()
    return out


def check_cache_matches_run(
    cache: TeacherCache,
    data: PreparedData,
    tokenizer: Any,
    data_args: DataArguments,
    kd_args: SectionKDConfig,
) -> None:
    """Refuse a run whose teacher, tokenizer, data or encoding differ from the cache's, naming the
    field and both values."""
    run = {
        "tokenizer_fingerprint": fingerprint_tokenizer(tokenizer),
        "encoding": encoding_settings(data_args),
        "rows": len(data.train),
    }
    if kd_args.teacher_model_name_or_path:
        run["teacher_fingerprint"] = teacher_fingerprint(kd_args.teacher_model_name_or_path)
    diff = []
    for key, value in run.items():
        if key == "encoding":
            diff += [
                f"{k}: cache {cache.info['encoding'].get(k)!r}, run {v!r}"
                for k, v in value.items()
                if cache.info["encoding"].get(k) != v
            ]
        elif cache.info.get(key) != value:
            diff.append(f"{key}: cache {cache.info.get(key)!r}, run {value!r}")
    if not diff:
        fingerprint = fingerprint_rows(data.train)
        if fingerprint != cache.info.get("data_fingerprint"):
            diff.append(
                f"data_fingerprint: cache {cache.info.get('data_fingerprint')!r}, run {fingerprint!r}"
            )
    if diff:
        raise ValueError(
            f"teacher_cache={str(cache.path)!r} was built for another run ({'; '.join(diff)}); fix: the settings the "
            "cache was built with, or rebuild it with `hf-cot-distill cache-teacher` for this recipe."
        )
