"""`datasets` integration: a builder with the paper setups as named configs.

datasets >= 4 has no loading scripts, so the builder is used as a class::

    from hf_cot_distill.data.builder import CoTDatasetBuilder
    builder = CoTDatasetBuilder(config_name="cot_icl_lab_cot")
    builder.download_and_prepare()
    ds = builder.as_dataset()                          # DatasetDict(train, eval)
    stream = builder.as_streaming_dataset("train")     # IterableDataset, same rows
    custom = CoTDatasetBuilder(name="mine", generator=CoTICLConfig(num_tasks=10_000))

The parquet export with a dataset card (``hf-cot-distill generate``) is
:func:`hf_cot_distill.hub.datasets.export_dataset`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa

from hf_cot_distill.core.resources import packaged_recipe, resolve_recipe
from hf_cot_distill.core.validation import check_choice, check_int, check_known_keys
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from hf_cot_distill.data.synthetic.generate import generate_batch
from hf_cot_distill.data.synthetic.schedules import CoTSchedule
from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig, generate_symbolic_task

GeneratorConfig = CoTICLConfig | SymbolicConfig
SPLIT_NAMES = ("train", "eval")

_INT32_LIST = datasets.List(datasets.Value("int32"))
COT_ICL_FEATURES = datasets.Features(
    {
        "task_index": datasets.Value("int64"),
        "n_inputs": datasets.Value("int32"),
        "n_parents": datasets.Value("int32"),
        "chain_length": datasets.Value("int32"),
        "n_examples": datasets.Value("int32"),
        "cot_example_prob": datasets.Value("float32"),
        "num_cot_examples": datasets.Value("int32"),
        "input_ids": _INT32_LIST,
        "labels": _INT32_LIST,
        "attention_mask": datasets.List(datasets.Value("int8")),
        "section_ids": datasets.List(datasets.Value("int8")),
        "eval_input_ids": _INT32_LIST,
        "eval_target_ids": _INT32_LIST,
        "answer": datasets.Value("int32"),
        "example_inputs": datasets.List(_INT32_LIST),
        "example_chains": datasets.List(_INT32_LIST),
        "example_has_cot": datasets.List(datasets.Value("bool")),
        "dag": datasets.List(_INT32_LIST),
    }
)
_STR_LIST = datasets.List(datasets.Value("string"))
SYMBOLIC_FEATURES = datasets.Features(
    {
        "task_index": datasets.Value("int64"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "input_words": datasets.List(_STR_LIST),
        "chain_words": datasets.List(_STR_LIST),
        "example_has_cot": datasets.List(datasets.Value("bool")),
        "dag": datasets.List(_INT32_LIST),
        "answer": datasets.Value("string"),
        "cot_example_prob": datasets.Value("float32"),
    }
)


def _recipe(alpha: float) -> CoTICLConfig:
    """The CoT-Recipe main sweep: hybrid prompts, N, M, C in {3, 4}, K 40, one fixed H."""
    return CoTICLConfig(
        prompt_strategy="hybrid_special_token",
        n_inputs_choices=(3, 4),
        n_parents_choices=(3, 4),
        chain_length_choices=(3, 4),
        num_unique_h=1,
        cot_schedule=CoTSchedule(kind="power_law", alpha=alpha),
    )


def _alpha_name(alpha: float) -> str:
    return "inf" if math.isinf(alpha) else f"{alpha:g}".replace(".", "p")


NAMED_CONFIGS: dict[str, GeneratorConfig] = {
    "cot_icl_lab_standard": CoTICLConfig(prompt_strategy="standard"),
    "cot_icl_lab_cot": CoTICLConfig(prompt_strategy="cot"),
    "cot_icl_lab_standard_special_token": CoTICLConfig(prompt_strategy="standard_special_token"),
    "cot_icl_lab_cot_special_token": CoTICLConfig(prompt_strategy="cot_special_token"),
    "cot_recipe_hybrid": _recipe(1.0),
    **{f"cot_recipe_hybrid_alpha{_alpha_name(a)}": _recipe(a) for a in (0.0, 0.5, 1.0, 2.0, math.inf)},
    "symbolic": SymbolicConfig(cot_schedule=CoTSchedule(kind="power_law", alpha=1.0)),
}


FEATURES_BY_KIND = {"cot_icl_lab": COT_ICL_FEATURES, "symbolic": SYMBOLIC_FEATURES}


def features_for(config: GeneratorConfig) -> datasets.Features:
    return SYMBOLIC_FEATURES if isinstance(config, SymbolicConfig) else COT_ICL_FEATURES


def num_tasks_for(config: GeneratorConfig, split: str) -> int:
    return config.num_tasks if split == "train" else config.num_eval_tasks


def generate_table(config: GeneratorConfig, start: int, stop: int, split: str) -> pa.Table:
    """Rows ``start .. stop - 1`` of a split as an Arrow table with the config's features."""
    schema = features_for(config).arrow_schema
    if isinstance(config, SymbolicConfig):
        rows = [generate_symbolic_task(config, i, split) for i in range(start, stop)]
        return pa.Table.from_pylist(rows, schema=schema)
    return generate_batch(config, range(start, stop), split).table.cast(schema)


@dataclass
class CoTDatasetConfig(datasets.BuilderConfig):
    """A builder config carrying a generator config (CoT-ICL Lab or symbolic)."""

    generator: GeneratorConfig = field(default_factory=CoTICLConfig)
    tasks_per_shard: int = 1024

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.generator, (CoTICLConfig, SymbolicConfig)):
            raise TypeError(
                f"generator must be a CoTICLConfig or SymbolicConfig, got {type(self.generator).__name__}."
            )
        check_int("CoTDatasetConfig.tasks_per_shard", self.tasks_per_shard, minimum=1)


class CoTDatasetBuilder(datasets.GeneratorBasedBuilder):
    """CoT-ICL Lab / CoT-Recipe / symbolic tasks as a `datasets` builder (train + eval splits)."""

    BUILDER_CONFIG_CLASS = CoTDatasetConfig
    BUILDER_CONFIGS = [CoTDatasetConfig(name=name, generator=cfg) for name, cfg in NAMED_CONFIGS.items()]
    DEFAULT_CONFIG_NAME = "cot_icl_lab_cot"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Synthetic chain-of-thought tasks (CoT-ICL Lab / CoT-Recipe) from hf_cot_distill.",
            features=features_for(self.config.generator),
            license="apache-2.0",
        )

    def _split_generators(self, dl_manager):
        gen = self.config.generator
        out = []
        for split in SPLIT_NAMES:
            n = num_tasks_for(gen, split)
            if n == 0:
                continue  # num_eval_tasks=0: no eval split (datasets refuses an empty one)
            step = self.config.tasks_per_shard
            chunks = [(s, min(s + step, n)) for s in range(0, n, step)]
            out.append(datasets.SplitGenerator(name=split, gen_kwargs={"chunks": chunks, "split": split}))
        return out

    def _generate_examples(self, chunks: list[tuple[int, int]], split: str) -> Iterator[tuple[int, dict]]:
        for start, stop in chunks:
            for row in generate_table(self.config.generator, start, stop, split).to_pylist():
                yield row["task_index"], row


def resolve_config(name_or_config: str | GeneratorConfig) -> tuple[str, GeneratorConfig]:
    """A named config, a YAML file path (or packaged name), or a config object -> ``(name, config)``."""
    if isinstance(name_or_config, (CoTICLConfig, SymbolicConfig)):
        return "custom", name_or_config
    name = str(name_or_config)
    if name in NAMED_CONFIGS:
        return name, NAMED_CONFIGS[name]
    if name.endswith((".yaml", ".yml")) or packaged_recipe(name) is not None:
        return load_generator_yaml(name)
    raise ValueError(
        f"config {name!r} is neither a named config nor a .yaml file or packaged generator YAML; named "
        f"configs: {sorted(NAMED_CONFIGS)}."
    )


def _card_metadata(folder: Path) -> dict:
    """The YAML front matter of ``folder/README.md`` (``{}`` when there is none or it is not YAML)."""
    import yaml

    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    head, sep, _ = text[3:].partition("\n---")
    try:
        meta = yaml.safe_load(head) if sep else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def folder_config_names(folder: str | os.PathLike) -> list[str]:
    """The ``configs:`` a local dataset folder's card declares (``[]`` when it declares none)."""
    configs = _card_metadata(Path(folder)).get("configs") or []
    return [
        c["config_name"] for c in configs if isinstance(c, dict) and isinstance(c.get("config_name"), str)
    ]


def folder_generator_config(folder: str | os.PathLike, config_name: str | None) -> GeneratorConfig | None:
    """The generator config that wrote ``config_name`` of a ``generate --out`` folder, read from its
    card (``None`` for folders that are not ours, or a config the card does not record); with
    ``config_name`` None, the folder's only config."""
    meta = _card_metadata(Path(folder)).get("hf_cot_distill") or {}
    entries = {e.get("name"): e for e in meta.get("generator_configs") or [] if isinstance(e, dict)}
    if config_name is None and len(entries) == 1:
        config_name = next(iter(entries))
    entry = entries.get(config_name)
    if entry is None or not isinstance(entry.get("fields"), dict):
        return None
    fields = dict(entry["fields"])
    base: GeneratorConfig = SymbolicConfig() if entry.get("kind") == "symbolic" else CoTICLConfig()
    where = f"{Path(folder) / 'README.md'}: generator_configs[{config_name}]"
    check_known_keys(where, fields, (f.name for f in dataclasses.fields(base)))
    if isinstance(fields.get("cot_schedule"), dict):
        fields["cot_schedule"] = CoTSchedule.from_mapping(fields["cot_schedule"], f"{where}: cot_schedule")
    return dataclasses.replace(base, **fields)


# Keys that only a training or compress recipe has: a YAML holding one is not a generator config.
TRAINING_RECIPE_KEYS = (
    "model_name_or_path",
    "teacher_model_name_or_path",
    "teacher_cache",
    "init_from_scratch",
    "dataset_name",
    "output_dir",
)


def _refuse_training_recipe(path: str | os.PathLike, raw: dict) -> None:
    """A training recipe given where a generator config is expected: one line naming what is."""
    found = [key for key in TRAINING_RECIPE_KEYS if key in raw]
    if not found:
        return
    dataset = raw.get("dataset_name")
    names_generator = isinstance(dataset, str) and dataset.startswith("generator:")
    hint = (
        f" This recipe trains on generator {dataset.removeprefix('generator:')!r}: pass that as --config."
        if names_generator
        else ""
    )
    raise ValueError(
        f"{path}: is a training recipe (it sets {', '.join(found)}), not a generator config; fix: give a "
        f"generator YAML (e.g. generators/cot_icl_lab_tiny; `hf-cot-distill recipes list` shows them) or a named "
        f"config (`hf-cot-distill list-configs`).{hint}"
    )


def load_generator_yaml(path: str | os.PathLike) -> tuple[str, GeneratorConfig]:
    """Load a generator config from YAML: ``name``, ``kind`` (cot_icl_lab | symbolic), ``base``
    (a named config to start from) and any config fields. Unknown keys are an error. ``path`` may
    name a packaged generator YAML (``generators/demo_cot_icl``; a path that exists wins)."""
    import yaml

    path = resolve_recipe(path, what="generator config file")
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}); fix the file.") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(raw).__name__}.")
    _refuse_training_recipe(path, raw)
    name = raw.pop("name", Path(path).stem)
    base_name = raw.pop("base", None)
    kind = raw.pop("kind", None)
    if base_name is not None:
        base = NAMED_CONFIGS[check_choice(f"{path}: base", base_name, sorted(NAMED_CONFIGS))]
    elif kind is not None and check_choice(f"{path}: kind", kind, ("cot_icl_lab", "symbolic")) == "symbolic":
        base = SymbolicConfig()
    else:  # kind None (the default) or "cot_icl_lab"
        base = CoTICLConfig()
    check_known_keys(str(path), raw, (f.name for f in dataclasses.fields(base)))
    if isinstance(raw.get("cot_schedule"), dict):
        raw["cot_schedule"] = CoTSchedule.from_mapping(raw["cot_schedule"], f"{path}: cot_schedule")
    return name, dataclasses.replace(base, **raw)
