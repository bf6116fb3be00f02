"""Card rendering (no network): Jinja templates from ``hub_cards/`` through `huggingface_hub` card classes.

* :func:`write_dataset_readme` -- the dataset card + ``configs:`` YAML of an exported folder;
* :func:`render_model_card` / :func:`write_model_card` -- the model card of a trained student,
  from plain values (what a trainer records: teacher, recipe, section policy, truncation,
  compute, eval results).

Publishing lives in ``hub.py``; this module only turns configs and counts into card text.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES
from hf_cot_distill.core.tables import code_cell, escape_cell

# ``hf_cot_distill/hub/templates`` is a link to the top-level ``hub_cards/`` folder, shipped as
# package data, so the same templates serve a source checkout and an installed wheel.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def template_path(name: str) -> Path:
    """Path of a card template; ``HF_COT_DISTILL_CARDS_DIR`` overrides the folder."""
    folder = Path(os.environ.get("HF_COT_DISTILL_CARDS_DIR", TEMPLATES_DIR))
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"card template {name!r} not found in {folder}; reinstall hf-cot-distill or set "
            "HF_COT_DISTILL_CARDS_DIR to a folder with the templates of hub_cards/."
        )
    return path


def _float_digits(dtype: Any) -> int | None:
    """Significant digits a float dtype narrower than float64 holds (float32: 7, float16: 4,
    bfloat16: 3); ``None`` for float64 and non-float dtypes."""
    finfos = [np.finfo] + ([sys.modules["torch"].finfo] if "torch" in sys.modules else [])
    for finfo in finfos:
        try:
            info = finfo(dtype)
        except (TypeError, ValueError):
            continue
        return None if info.bits >= 64 else round(-math.log10(info.resolution)) + 1
    return None


def _scalar(value: Any) -> Any:
    """A numpy scalar, 0-d array or 0-d tensor as a Python number; a float32 (float16, bfloat16)
    keeps the digits its dtype holds (``np.float32(1e-4)`` -> ``0.0001``, not
    ``9.999999747378752e-05``). Anything else is returned unchanged."""
    if getattr(value, "ndim", None) != 0 or not hasattr(value, "item") or not hasattr(value, "dtype"):
        return value
    digits = _float_digits(value.dtype)
    value = value.item()
    if digits is not None and isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.{digits}g}")
    return value


def _plain(value: Any) -> Any:
    """Config values as YAML-safe plain data (tuples -> lists, inf -> 'inf', dataclasses and
    mappings -> dicts, numpy scalars, arrays and tensors -> Python numbers and lists)."""
    value = _scalar(value)
    if getattr(value, "ndim", 0) and hasattr(value, "tolist"):  # an array or tensor of values
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def config_entry(
    name: str, config: Any, counts: dict[str, int], num_bytes: dict[str, int] | None = None
) -> dict[str, Any]:
    """The card's record of one exported config."""
    kind = "symbolic" if type(config).__name__ == "SymbolicConfig" else "cot_icl_lab"
    fields = _plain(config)
    fields.pop("system_prompt", None)  # long; it is in every row's messages
    entry = {"name": name, "kind": kind, "splits": dict(counts), "fields": fields}
    entry["num_bytes"] = dict(num_bytes or {})
    return entry


def _dataset_info(entry: dict[str, Any]) -> dict[str, Any]:
    """``dataset_info`` YAML of one config: features, split sizes and exact byte counts.

    ``load_dataset`` on a local folder keys its cache on the README metadata, not on the
    files, so recording the exact sizes here is what makes a re-export invalidate the cache.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo

    from hf_cot_distill.data.builder import FEATURES_BY_KIND

    sizes = entry.get("num_bytes", {})
    splits = SplitDict()
    for split, n in entry["splits"].items():
        splits.add(SplitInfo(name=split, num_bytes=int(sizes.get(split, 0)), num_examples=int(n)))
    info = DatasetInfo(
        config_name=entry["name"],
        features=FEATURES_BY_KIND[entry["kind"]],
        splits=splits,
        dataset_size=int(sum(sizes.values())),
    )
    return info._to_yaml_dict()


def _size_category(n_rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n_rows < bound:
            return label
    return "n>1M"


def render_dataset_card(entries: list[dict[str, Any]], repo_or_path: str) -> DatasetCard:
    """The dataset card of the exported configs ``entries`` (see :func:`config_entry`);
    ``repo_or_path`` is what the "how to load" snippet passes to ``load_dataset``."""
    ordered = sorted(entries, key=lambda e: e["name"])
    n_rows = sum(int(n) for e in ordered for n in e["splits"].values())
    card_data = DatasetCardData(
        license="apache-2.0",
        tags=["synthetic", "chain-of-thought", "in-context-learning", "hf-cot-distill"],
        task_categories=["text-generation"],
        size_categories=[_size_category(n_rows)],
        pretty_name="hf_cot_distill synthetic CoT tasks",
        configs=[
            {
                "config_name": e["name"],
                "data_files": [{"split": s, "path": f"{e['name']}/{s}-*.parquet"} for s in e["splits"]],
            }
            for e in ordered
        ],
        dataset_info=[_dataset_info(e) for e in ordered],
        hf_cot_distill={"generator_configs": ordered},
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md.j2")),
        pretty_name="hf_cot_distill synthetic CoT tasks",
        generator_configs=[{**e, "fields": _cells(e["fields"])} for e in ordered],  # cells for the table
        repo_or_path=repo_or_path,
        has_cot_icl=any(e["kind"] == "cot_icl_lab" for e in ordered),
        has_symbolic=any(e["kind"] == "symbolic" for e in ordered),
    )


def _exported_entries(readme: Path) -> dict[str, dict[str, Any]]:
    """The configs recorded in an existing README (``{}`` when there is none)."""
    if not readme.is_file():
        return {}
    old = DatasetCard.load(readme).data.to_dict()
    return {e["name"]: e for e in old.get("hf_cot_distill", {}).get("generator_configs", [])}


def write_dataset_readme(
    root: str | os.PathLike,
    name: str,
    config: Any,
    counts: dict[str, int],
    num_bytes: dict[str, int] | None = None,
) -> Path:
    """Write (or update) ``root/README.md``: ``configs:`` YAML for ``load_dataset`` + the card.

    Configs exported earlier into the same folder are kept; ``name`` is added or replaced.
    """
    root = Path(root)
    readme = root / "README.md"
    entries = _exported_entries(readme)
    entries[name] = config_entry(name, config, counts, num_bytes)
    render_dataset_card(list(entries.values()), str(root)).save(readme)
    return readme


def dataset_card_for_repo(root: str | os.PathLike, repo_id: str) -> DatasetCard | None:
    """The card of an exported folder re-rendered for the Hub repo ``repo_id`` (its "how to load"
    says ``load_dataset(repo_id, ...)``); ``None`` if ``root/README.md`` is not one of ours."""
    entries = _exported_entries(Path(root) / "README.md")
    return render_dataset_card(list(entries.values()), repo_id) if entries else None


# --------------------------------------------------------------------------- model cards

MODEL_CARD_TAGS = ("hf-cot-distill", "chain-of-thought", "distillation")


def _cells(table: Mapping[str, Any]) -> dict[str, str]:
    """A ``{setting: value}`` table with every key and value as an inline-code cell."""
    return {code_cell(k): code_cell(v) for k, v in table.items()}


def _number(value: Any) -> str:
    """A table cell: ints with thousands separators, floats to 4 significant digits."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return escape_cell(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    return f"{float(value):.4g}"


def _compute_value(name: str, value: Any) -> str:
    """A compute cell, units by key: ``*flops*`` -> ``1.234e+15``; ``*_s`` / ``*seconds`` ->
    seconds (and hours); ``*_bytes`` -> GiB; ``*_mb`` -> MiB; a mapping (e.g. tokens per
    section) -> ``key value, ...``; anything else through :func:`_number`."""
    value = _scalar(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{escape_cell(k)} {_number(v)}" for k, v in value.items())
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return escape_cell(value)
    key = name.lower()
    if "flops" in key:
        return f"{float(value):.3e}"
    if key.endswith(("_s", "seconds")):
        return f"{float(value):.1f} s ({float(value) / 3600:.2f} h)"
    if key.endswith("_bytes"):
        return f"{float(value) / 2**30:.2f} GiB"
    if key.endswith("_mb"):
        return f"{float(value):,.1f} MiB"
    return _number(value)


def _supervision_rows(supervision: Any) -> list[dict[str, str]]:
    """Rows of the section table from ``{section: {ce_weight, kd_weight, kd_temperature}}`` (a
    ``SupervisionPolicy`` works too: it is a dataclass of exactly that shape)."""
    table = _plain(supervision)
    if not isinstance(table, Mapping):
        raise TypeError(
            f"supervision: expected a mapping section -> {{ce_weight, kd_weight, kd_temperature}}, got "
            f"{type(supervision).__name__}; fix: pass dataclasses.asdict(policy) or the policy itself."
        )
    unknown = sorted(set(table) - set(CONTENT_SECTION_NAMES))
    if unknown:
        raise ValueError(
            f"supervision: unknown sections {unknown}; fix: use keys from {list(CONTENT_SECTION_NAMES)}."
        )
    rows = []
    for section in CONTENT_SECTION_NAMES:
        sup = table.get(section) or {}
        temperature = sup.get("kd_temperature")
        rows.append(
            {
                "section": section,
                "ce_weight": _number(sup.get("ce_weight", 0.0)),
                "kd_weight": _number(sup.get("kd_weight", 0.0)),
                "kd_temperature": "default" if temperature is None else _number(temperature),
            }
        )
    return rows


def _truncation_tables(accounting: Any) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Per-section rows and counters from ``TruncationAccounting.to_dict()`` (or the object)."""
    if accounting is None or isinstance(accounting, str):
        return [], {}
    flat = accounting.to_dict() if hasattr(accounting, "to_dict") else dict(accounting)
    rows = []
    for section in CONTENT_SECTION_NAMES:
        if f"tokens_before/{section}" not in flat:
            continue
        kept, before = int(flat[f"tokens_kept/{section}"]), int(flat[f"tokens_before/{section}"])
        percent = 100.0 if before == 0 else 100.0 * kept / before
        rows.append(
            {"section": section, "kept": f"{kept:,}", "before": f"{before:,}", "percent": f"{percent:.1f}%"}
        )
    counters = {k: _number(v) for k, v in flat.items() if "/" not in k}
    return rows, counters


def _eval_table(eval_results: Any) -> tuple[list[str], list[list[str]]]:
    """``{metric: value}`` or a list of row dicts -> (columns, rows); columns in first-seen order."""
    if not eval_results:
        return [], []
    if isinstance(eval_results, Mapping):
        eval_results = [{"metric": k, "value": v} for k, v in eval_results.items()]
    columns: list[str] = []
    for row in eval_results:
        columns += [k for k in row if k not in columns]
    return [escape_cell(c) for c in columns], [
        [_number(row.get(c, "")) for c in columns] for row in eval_results
    ]


def _summary(model_name: str, base_model: str | None, teacher: str | None, datasets: Sequence[str]) -> str:
    """The card's first sentence (without its ending), e.g. "`m` is a student distilled from …"."""
    text = (
        f"`{model_name}` is a student distilled from the teacher `{teacher}`"
        if teacher
        else f"`{model_name}` was trained"
    )
    text += f", initialised from `{base_model}`" if base_model else " from a random initialisation"
    if datasets:
        text += ", on " + ", ".join(f"`{d}`" for d in datasets)
    return text + ","


def render_model_card(
    *,
    model_name: str,
    base_model: str | None,
    teacher: str | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    recipe_name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    supervision: Any = None,
    objective: str | None = None,
    truncation: Mapping[str, Any] | None = None,
    truncation_accounting: Any = None,
    compute: Mapping[str, Any] | None = None,
    eval_results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    compression: Mapping[str, Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    pipeline_tag: str = "text-generation",
    library_name: str = "transformers",
) -> ModelCard:
    """The model card of a trained student, from plain values (no network).

    Args:
        model_name: the card's title (usually the repo name).
        base_model: the model the student was initialised from (``None``: from scratch).
        teacher: the frozen teacher of KD (``None``: plain fine-tuning).
        datasets: Hub dataset ids trained on (``datasets:`` metadata).
        license, tags, pipeline_tag, library_name: YAML metadata; ``tags`` are added to
            ``MODEL_CARD_TAGS`` (plus ``"knowledge-distillation"`` when there is a teacher).
        recipe_name / recipe: the recipe YAML's name and its flat ``{field: value}`` mapping.
        supervision: ``{"prompt"|"cot"|"answer": {"ce_weight", "kd_weight", "kd_temperature"}}``
            or a ``SupervisionPolicy`` (a table), or text such as ``policy.describe()``.
        objective: one line naming the loss, e.g. ``"0.5·CE + 0.5·forward KL (T = 1)"``.
        truncation: the policy's settings, e.g. ``{"policy": "lead_span_proportion",
            "lead_span_proportion": 0.5}``; ``truncation_accounting``: ``TruncationAccounting``
            or its ``to_dict()`` (a table of tokens kept / before per section), or its
            ``report()`` text.
        compute: e.g. ``{"tokens_forwarded": ..., "flops_counted": ..., "train_time_s": ...,
            "peak_memory_mb": ...}``; units follow the key (see :func:`_compute_value`).
        eval_results: ``{metric: value}`` or rows such as ``{"task", "metric", "value"}``.
        compression: the settings of ``hf-cot-distill compress`` by stage, e.g. ``{"pruning":
            {"mlp_keep_ratio": 0.5, ...}, "quantization": {"bits": 4, "group_size": 32, ...}}``
            (a table per stage; a quantized model's "how to load" names compressed-tensors).
        repo_id: where the model will live; the "how to load" snippet uses it (default
            ``model_name``).

    Returns:
        A ``huggingface_hub.ModelCard``; ``card.save(path)`` or :func:`write_model_card`.
    """
    if not model_name:
        raise ValueError("model_name: must be a non-empty string; fix: e.g. 'qwen2.5-0.5b-cot-kd'.")
    all_tags = list(MODEL_CARD_TAGS) + (["knowledge-distillation"] if teacher else []) + list(tags)
    compression = _plain(compression or {})  # {stage: {setting: value}}, plain data
    all_tags += [
        {"pruning": "pruned", "quantization": "quantized"}.get(stage, stage) for stage in compression
    ]
    machine_readable = {
        "teacher": teacher,
        "recipe_name": recipe_name,
        "recipe": _plain(recipe) if recipe else None,
        "supervision": _plain(supervision) if supervision else None,
        "objective": objective,
        "truncation": _plain(truncation) if truncation else None,
        "compute": _plain(compute) if compute else None,
        "compression": compression or None,
    }
    card_data = ModelCardData(
        license=license,
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=list(dict.fromkeys(all_tags)),
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        hf_cot_distill={k: v for k, v in machine_readable.items() if v is not None} or None,
    )
    truncation_rows, truncation_counters = _truncation_tables(truncation_accounting)
    eval_columns, eval_rows = _eval_table(eval_results)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card.md.j2")),
        model_name=model_name,
        summary=_summary(model_name, base_model, teacher, datasets),
        teacher=code_cell(teacher) if teacher else None,
        base_model=code_cell(base_model) if base_model else None,
        datasets=list(datasets),
        recipe_name=recipe_name,
        recipe=_cells(_plain(recipe or {})),
        supervision_rows=_supervision_rows(supervision)
        if supervision and not isinstance(supervision, str)
        else [],
        supervision_text=supervision if isinstance(supervision, str) else None,
        objective=objective,
        truncation=_cells(_plain(truncation or {})),
        truncation_rows=truncation_rows,
        truncation_text=truncation_accounting if isinstance(truncation_accounting, str) else None,
        truncation_counters=truncation_counters,
        compute_rows=[
            {"name": escape_cell(k), "value": _compute_value(k, v)} for k, v in (compute or {}).items()
        ],
        eval_columns=eval_columns,
        eval_rows=eval_rows,
        repo_or_path=repo_id or model_name,
        license=license,
        compression={stage: _cells(settings) for stage, settings in compression.items()},
        quantized="quantization" in compression,
    )


def write_model_card(folder: str | os.PathLike, **card_fields: Any) -> Path:
    """Render :func:`render_model_card` (same keyword arguments) to ``folder/README.md``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder {folder} does not exist; fix: save the model first (model.save_pretrained(folder))."
        )
    readme = folder / "README.md"
    render_model_card(**card_fields).save(readme)
    return readme


def render_teacher_cache_card(info: Mapping[str, Any]) -> DatasetCard:
    """The dataset card of a teacher cache folder (``hf-cot-distill cache-teacher``): what was
    cached, from which teacher, tokenizer, data and encoding, and what it costs per position."""
    from hf_cot_distill.core.tables import markdown_table

    settings, stats = info["settings"], info.get("stats", {})
    data = DatasetCardData(
        tags=["hf-cot-distill", "teacher-cache", "distillation"],
        configs=[
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
        ],
    )
    what = (
        f"{settings['samples']} tokens drawn per position from the teacher's distribution (stored as distinct ids "
        "with counts: an unbiased estimate of the forward-KL gradient)"
        if settings["mode"] == "sampled"
        else f"the top {settings['k']} ids per position with their log-probs and the tail log-mass (a tail bucket, "
        "never a renormalised top-K)"
    )
    provenance = [
        ["teacher", code_cell(info.get("teacher"))],
        ["teacher fingerprint", code_cell(info.get("teacher_fingerprint"))],
        ["tokenizer fingerprint", code_cell(info.get("tokenizer_fingerprint"))],
        ["data fingerprint", code_cell(info.get("data_fingerprint"))],
        ["rows", code_cell(info.get("rows"))],
        ["vocabulary", code_cell(info.get("vocab_size"))],
        *[[f"encoding: {k}", code_cell(v)] for k, v in sorted(info.get("encoding", {}).items())],
        *[[f"cache: {k}", code_cell(v)] for k, v in sorted(settings.items())],
    ]
    per_section = stats.get("positions_by_section", {})
    skipped = [s for s in CONTENT_SECTION_NAMES if s not in settings["sections"]]
    cost = [
        ["positions cached", f"{stats.get('positions', 0):,}"],
        *[[f"positions cached: {s}", f"{n:,}"] for s, n in per_section.items()],
        ["sections left out", ", ".join(skipped) or "none"],
        ["bytes per position (payload)", f"{stats.get('bytes_per_position', 0):.2f}"],
        ["bytes per position (files)", f"{stats.get('file_bytes_per_position', 0):.2f}"],
        ["targets per position", f"{stats.get('targets_per_position', 0):.2f}"],
    ]
    if settings["mode"] == "topk":
        cost += [
            ["tail mass, mean", f"{stats.get('tail_mass_mean', 0):.4g}"],
            ["tail mass, max", f"{stats.get('tail_mass_max', 0):.4g}"],
        ]
    body = "\n".join(
        [
            "# Teacher cache",
            "",
            f"Targets of the teacher `{info.get('teacher')}` over {info.get('rows', 0):,} encoded training rows: {what}, "
            f"at temperature {settings['temperature']}. Train a student from it with `teacher_cache: <this folder>` in "
            "a recipe (forward KL; the run's teacher, tokenizer, data, encoding and temperature must match the table "
            "below, or the run is refused).",
            "",
            "## Provenance",
            "",
            markdown_table(["field", "value"], provenance, escape=False),
            "## Size",
            "",
            markdown_table(["", "value"], cost),
        ]
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
