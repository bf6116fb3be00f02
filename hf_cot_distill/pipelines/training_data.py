"""Training data: a recipe's data settings -> encoded splits with section ids, every dropped row counted.

Data comes from a dataset folder / Hub id (reasoning traces in any supported layout, encoded with
section ids through the tokenizer's offsets, or already tokenized rows) or from the generator
(``dataset_name: generator:<named config, yaml, or packaged generator YAML>``). Rows the trace
encoder refuses are counted per split and case and reported; a split left empty is refused; data
with nothing the supervision preset trains on is refused before any model loads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from hf_cot_distill.core.validation import check_choice
from hf_cot_distill.models.loading import TOKENIZER_FILES
from hf_cot_distill.pipelines.recipe import DataArguments
from hf_cot_distill.trainers.kd_config import SectionKDConfig

logger = logging.getLogger(__name__)
GENERATOR_PREFIX = "generator:"

# Trace cases that refuse a row whatever the settings (train encodes with on_invalid="drop").
_REFUSED_CASES = (
    "missing_close_marker",
    "malformed_markers",
    "text_before_cot",
    "no_final_assistant_turn",
    "malformed_row",
)


@dataclass
class PreparedData:
    """The encoded splits, plus what produced them (for the card and the eval hook).

    ``rows``: per split (``"train"``, ``"eval"``), ``{"rows": read, "dropped": refused by the
    trace encoder, "dropped_by_reason": {case: n}, "used": after max_*_samples}``.
    ``trace_stats``: per split, the encoder's :class:`TraceStats` counts (every case, handled or
    refused); ``None`` for generated or already tokenized data.
    """

    train: datasets.Dataset
    eval: datasets.Dataset | None
    generator_config: Any = None  # CoTICLConfig / SymbolicConfig when generated
    trace_stats: dict[str, dict[str, int]] | None = None
    description: str = ""
    rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def dropped(self) -> int:
        return sum(r["dropped"] for r in self.rows.values())

    def drop_report(self) -> str:
        """One line per split with dropped rows, e.g. ``train: 12 of 16 rows dropped (too_long 12)``."""
        lines = []
        for split, r in self.rows.items():
            if r["dropped"]:
                reasons = ", ".join(f"{k} {v}" for k, v in r["dropped_by_reason"].items())
                lines.append(f"{split}: {r['dropped']} of {r['rows']} rows dropped ({reasons})")
        return "; ".join(lines)


def _row_counts(ds: datasets.Dataset | None) -> dict[str, Any] | None:
    """``PreparedData.rows`` entry of a split that no encoder touched."""
    return None if ds is None else {"rows": len(ds), "dropped": 0, "dropped_by_reason": {}}


def _encoded_row_counts(stats: Any, encoder: Any) -> dict[str, Any]:
    """``PreparedData.rows`` entry of an encoded split: rows read, rows the encoder refused by case."""
    refused = _REFUSED_CASES + ("too_long",) * (encoder.on_too_long == "refuse")
    refused += ("empty_cot",) * (encoder.on_empty_cot == "refuse")
    by_reason = {case: stats.counts[case] for case in refused if stats.counts.get(case)}
    other = stats.counts["dropped"] - sum(by_reason.values())
    if other > 0:  # a refusal case this list does not know yet: still counted
        by_reason["other"] = other
    return {"rows": stats.samples, "dropped": stats.counts["dropped"], "dropped_by_reason": by_reason}


def _limit(ds: datasets.Dataset | None, n: int | None) -> datasets.Dataset | None:
    if ds is None or n is None:
        return ds
    return ds.select(range(min(n, len(ds))))


def _generated(data_args: DataArguments) -> PreparedData:
    from hf_cot_distill.data.builder import generate_table, num_tasks_for, resolve_config
    from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig

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


def _load_raw(data_args: DataArguments) -> datasets.DatasetDict:
    """``load_dataset(dataset_name, dataset_config)``, its failures as ``ValueError`` naming the
    field: no such folder (and no Hub), or a split without rows."""
    name = data_args.dataset_name
    try:
        return datasets.load_dataset(name, data_args.dataset_config)
    except (ConnectionError, FileNotFoundError) as err:
        if Path(name).exists():
            raise ValueError(f"dataset_name={name!r}: {err}") from err
        offline = " (offline mode: HF_HUB_OFFLINE=1)" if datasets.config.HF_HUB_OFFLINE else ""
        raise ValueError(
            f"dataset_name={name!r}: not a local folder (nothing at {Path(name).absolute()}), and the Hub "
            f"could not provide it{offline}: {err}; fix: pass an existing dataset folder (e.g. from "
            "`hf-cot-distill generate --out`), or go online for a Hub dataset id."
        ) from err
    except datasets.exceptions.DatasetGenerationError as err:  # e.g. an unreadable data file
        raise ValueError(f"dataset_name={name!r}: could not read it: {err.__cause__ or err}") from err
    except ValueError as err:
        empty = re.fullmatch(r'Instruction "(.+)" corresponds to no data!', str(err))
        if empty is None:
            raise
        raise ValueError(
            f"dataset_name={name!r}: split {empty.group(1)!r} has 0 rows; fix: add rows to it or remove "
            "its files."
        ) from err


def _check_folder_config(data_args: DataArguments) -> Any:
    """A local folder whose card declares several configs needs ``dataset_config`` (one line listing
    them, not the ``datasets`` message); a ``generate --out`` folder's CoT-ICL config is returned so
    the student is built for the data's vocabulary and evaluated as on ``generator:`` data."""
    from hf_cot_distill.data.builder import folder_config_names, folder_generator_config
    from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig

    name = data_args.dataset_name
    if not Path(name).is_dir():
        return None
    configs = folder_config_names(name)
    if data_args.dataset_config is None and len(configs) > 1:
        raise ValueError(
            f"dataset_name={name!r} holds {len(configs)} configs ({', '.join(configs)}) and dataset_config is "
            f"not set; fix: add --dataset_config NAME (or dataset_config: NAME in the recipe), e.g. "
            f"--dataset_config {configs[0]}."
        )
    if data_args.dataset_config is not None and configs:
        check_choice("dataset_config", data_args.dataset_config, configs, fix=f"use a config of {name}")
    config = folder_generator_config(name, data_args.dataset_config)
    return config if isinstance(config, CoTICLConfig) else None


def _encoded(data_args: DataArguments, tokenizer: Any, tokenizer_source: str | None = None) -> PreparedData:
    from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset
    from hf_cot_distill.data.traces.formats import MARKER_PRESETS, detect_format

    generator_config = _check_folder_config(data_args)
    raw = _load_raw(data_args)
    fix = f"use a split of {data_args.dataset_name}"
    check_choice("dataset_train_split", data_args.dataset_train_split, list(raw), fix=fix)
    if data_args.dataset_eval_split is not None:  # None: no eval split
        fix = f"use a split of {data_args.dataset_name}, or remove dataset_eval_split"
        check_choice("dataset_eval_split", data_args.dataset_eval_split, list(raw), fix=fix)
    train = raw[data_args.dataset_train_split]
    evals = raw[data_args.dataset_eval_split] if data_args.dataset_eval_split else None
    fmt = data_args.dataset_format
    columns = set(train.column_names)
    if fmt == "tokenized" or (fmt == "auto" and {"input_ids", "section_ids"} <= columns):
        rows = {"train": _row_counts(train), "eval": _row_counts(evals)}
        return PreparedData(
            train, evals, generator_config, None, f"{data_args.dataset_name} (tokenized)", rows
        )
    if tokenizer is None:
        if tokenizer_source:
            raise ValueError(
                f"{data_args.dataset_name} holds text ({sorted(columns)}), but {tokenizer_source!r} has no "
                f"tokenizer (none of {', '.join(TOKENIZER_FILES)}); fix: set tokenizer_name_or_path to "
                "the student's tokenizer (a folder or Hub id)."
            )
        raise ValueError(
            f"{data_args.dataset_name} holds text ({sorted(columns)}); set model_name_or_path or "
            "tokenizer_name_or_path so it can be tokenized."
        )
    fmt = detect_format(train.column_names) if fmt == "auto" else fmt
    # Encode only the rows a capped run can use (rows the encoder drops are not replaced: they are
    # counted and reported, and the run trains on fewer).
    train = _limit(train, data_args.max_train_samples)
    evals = _limit(evals, data_args.max_eval_samples)
    encoder = ReasoningTraceEncoder(
        tokenizer=tokenizer,
        source_format=fmt,
        source_markers=MARKER_PRESETS[data_args.source_markers],
        render_markers=MARKER_PRESETS[data_args.render_markers],
        max_length=data_args.max_length,
        on_too_long=data_args.on_too_long,
        on_empty_cot=data_args.on_empty_cot,
        on_empty_answer=data_args.on_empty_answer,
        on_invalid="drop",
    )
    kwargs = {"num_proc": data_args.dataset_num_proc} if data_args.dataset_num_proc else {}
    data = PreparedData(train, evals, None, {}, f"{data_args.dataset_name} ({fmt})")
    for split, ds in (("train", train), ("eval", evals)):
        if ds is None:
            continue
        encoded, stats = encode_dataset(ds, encoder, **kwargs)
        logger.info("trace encoding (%s): %s", split, stats.report())
        setattr(data, split, encoded)
        data.trace_stats[split] = dict(stats.counts, samples=stats.samples)
        data.rows[split] = _encoded_row_counts(stats, encoder)
    return data


def _drop_fixes(data: PreparedData, data_args: DataArguments) -> str:
    reasons = {reason for r in data.rows.values() for reason in r["dropped_by_reason"]}
    fixes = []
    if "too_long" in reasons:
        fixes.append(
            f"too_long: raise max_length (now {data_args.max_length}), or set on_too_long: keep so a "
            "truncation_policy cuts them (and reports the cut)"
        )
    if reasons - {"too_long"}:
        fixes.append(
            f"{', '.join(sorted(reasons - {'too_long'}))}: repair those rows, or check dataset_format / "
            "source_markers (the cases and their rules: hf_cot_distill.data.traces.formats)"
        )
    return "; ".join(fixes)


def _check_rows(data: PreparedData, data_args: DataArguments) -> None:
    """Refuse a split left without rows; name the dropped rows and why."""
    for split, ds, cap in (
        ("train", data.train, data_args.max_train_samples),
        ("eval", data.eval, data_args.max_eval_samples),
    ):
        if ds is None or len(ds):
            continue
        counts = data.rows.get(split) or {"rows": 0, "dropped": 0, "dropped_by_reason": {}}
        name = data_args.dataset_train_split if split == "train" else data_args.dataset_eval_split
        where = f"{data.description}: {split} split" + (f" {name!r}" if name else "")
        if counts["rows"] == 0:
            raise ValueError(f"{where} has 0 rows; fix: add rows to it, or use another dataset / split.")
        if counts["dropped"] == counts["rows"]:
            reasons = ", ".join(f"{k} {v}" for k, v in counts["dropped_by_reason"].items())
            raise ValueError(
                f"{where}: 0 rows left: all {counts['rows']} were dropped by the trace encoder ({reasons}); "
                f"fix: {_drop_fixes(data, data_args)}."
            )
        field = "max_train_samples" if split == "train" else "max_eval_samples"
        raise ValueError(f"{where}: {field}={cap} leaves 0 rows; fix: raise it or remove it.")


def pin_marker_lengths(kd_args: SectionKDConfig, data_args: DataArguments, tokenizer: Any) -> None:
    """For ``section_preserving`` on text: fix ``cot_open_tokens`` / ``cot_close_tokens`` in
    ``truncation_kwargs`` to the token lengths of the markers the text is rendered with
    (``render_markers``; the trainer alone measures ``<think>``), unless the recipe sets them."""
    if kd_args.truncation_policy != "section_preserving" or tokenizer is None:
        return
    from hf_cot_distill.data.traces.formats import MARKER_PRESETS

    policy = kd_args.build_truncation(tokenizer, MARKER_PRESETS[data_args.render_markers])
    pinned = {"cot_open_tokens": policy.cot_open_tokens, "cot_close_tokens": policy.cot_close_tokens}
    kd_args.truncation_kwargs = {**pinned, **(kd_args.truncation_kwargs or {})}


def prepare_data(
    data_args: DataArguments, tokenizer: Any, tokenizer_source: str | None = None
) -> PreparedData:
    """Load or generate, encode, and cap the splits.

    Rows the trace encoder refuses are dropped, counted (``PreparedData.rows``) and reported on
    stderr; a split left with 0 rows is refused (``ValueError``). ``tokenizer_source``: where
    ``tokenizer`` was looked for, named when it is ``None`` but the data is text.
    """
    if not data_args.dataset_name:
        raise ValueError("dataset_name is required: a dataset folder / Hub id, or generator:<config>.")
    if data_args.dataset_name.startswith(GENERATOR_PREFIX):
        data = _generated(data_args)
        data.rows = {"train": _row_counts(data.train), "eval": _row_counts(data.eval)}
    else:
        data = _encoded(data_args, tokenizer, tokenizer_source)
    data.rows = {split: r for split, r in data.rows.items() if r is not None}
    data.train = _limit(data.train, data_args.max_train_samples)
    data.eval = _limit(data.eval, data_args.max_eval_samples)
    for split, ds in (("train", data.train), ("eval", data.eval)):
        if split in data.rows:
            data.rows[split]["used"] = len(ds)
    if data.dropped() and int(os.environ.get("RANK", "0")) == 0:  # once per run, not per process
        print(
            f"warning: {data.description}: the trace encoder dropped rows, they are not trained or evaluated "
            f"on: {data.drop_report()}. Fix: {_drop_fixes(data, data_args)}.",
            file=sys.stderr,
        )
    _check_rows(data, data_args)
    return data


def _keeps_a_target(ds: datasets.Dataset, policy: Any, truncation: Any) -> tuple[bool, int]:
    """``(some row keeps a supervised target after truncation, rows with a supervised token
    read)``; stops at the first such row (a target: past position 0, which nothing predicts)."""
    import numpy as np

    with_section = 0
    for batch in ds.select_columns(["section_ids"]).iter(batch_size=1024):
        for row in batch["section_ids"]:
            section_ids = np.asarray(row, dtype=np.int64)
            mask = policy.supervised_mask(section_ids)
            if not mask[1:].any():
                continue
            with_section += 1
            keep = truncation.keep_indices(section_ids) if truncation is not None else None
            if (mask[1:] if keep is None else mask[keep[1:]]).any():
                return True, with_section
    return False, with_section


def _empty_cot_rows(ds: datasets.Dataset) -> int:
    """Encoded text rows whose source had no CoT (``empty_cot``: rendered as an empty think block)."""
    from hf_cot_distill.data.traces.formats import CASE_BITS

    if "trace_flags" not in ds.column_names:
        return 0
    bit = CASE_BITS["empty_cot"]
    return sum(1 for flags in ds["trace_flags"] if flags & bit)


def check_supervised_rows(data: PreparedData, kd_args: SectionKDConfig, kd_enabled: bool) -> None:
    """Refuse a split with nothing to train on for the supervision policy: no row keeps a token
    of a supervised section after truncation (every batch would fail with "no position carries a
    KD or CE weight", after the models are loaded), or, for a CoT-only policy, no row has a CoT
    (only empty think blocks). Reads rows until the first good one."""
    from hf_cot_distill.core.sections import SECTION_NAMES, Section

    policy = kd_args.build_supervision(kd_enabled)
    truncation = kd_args.build_truncation()
    names = "/".join(SECTION_NAMES[s] for s in sorted(policy.supervised_sections))
    where = f"supervision_preset={kd_args.supervision_preset!r} supervises only {names}"
    fix = (
        "Fix: data with those sections (e.g. <think> blocks; check dataset_format / source_markers), or a "
        "supervision_preset that matches the data's sections"
    )
    for split, ds in (("train", data.train), ("eval", data.eval)):
        if ds is None:
            continue
        if policy.supervised_sections == {int(Section.COT)} and _empty_cot_rows(ds) == len(ds):
            raise ValueError(
                f"{data.description}: 0 of {len(ds)} {split} rows have a CoT (all are empty_cot: no reasoning "
                f"in the source, rendered as an empty think block), and {where}. {fix}."
            )
        found, with_section = _keeps_a_target(ds, policy, truncation)
        if not found:
            detail = (
                f"truncation_policy={kd_args.truncation_policy!r} cuts them from all {with_section} rows "
                "that have them"
                if with_section
                else "no row has one"
            )
            raise ValueError(
                f"{data.description}: 0 of {len(ds)} {split} rows have a {names} token to train on: {detail}, "
                f"and {where}. {fix}, or a truncation that keeps them."
            )
