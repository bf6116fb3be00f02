"""Dataset export: generator rows as parquet shards plus a dataset card, the layout the Hub serves.

``export_dataset(...)`` (the ``hf-cot-distill generate`` command) writes
``out_dir/<config>/{train,eval}-XXXXX-of-YYYYY.parquet`` and a README with ``configs:`` YAML so
that ``load_dataset(out_dir, "<config>")`` gives the same rows as the builder.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hf_cot_distill.core.outputs import claim_output_dir
from hf_cot_distill.data.builder import (
    SPLIT_NAMES,
    GeneratorConfig,
    features_for,
    generate_table,
    num_tasks_for,
    resolve_config,
)
from hf_cot_distill.hub.cards import write_dataset_readme


def check_config_name(name: object, source: str) -> None:
    """A config name is a folder under the export root: one plain path component."""
    bad = not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\")
    if bad or name != name.strip():
        raise ValueError(
            f"{source}={name!r} is not a plain config name (it names a folder inside the output folder); "
            "fix: use one folder name, without path separators or '..', e.g. 'my_config'."
        )


def export_dataset(
    name_or_config: str | GeneratorConfig,
    out_dir: str | os.PathLike,
    num_tasks: int | None = None,
    num_eval_tasks: int | None = None,
    tasks_per_shard: int = 4096,
    config_name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/<config>/{train,eval}-XXXXX-of-YYYYY.parquet`` and a README with
    ``configs:`` YAML + dataset card, so that ``load_dataset(out_dir, "<config>")`` works.

    Several configs can be exported into the same folder: the README lists them all. The folder
    follows the one output rule (:func:`hf_cot_distill.core.outputs.claim_output_dir`): new, empty,
    or written by ``generate`` before, unless ``overwrite`` (``--overwrite``).
    Returns the folder of this config.
    """
    if config_name is not None:
        check_config_name(config_name, "config_name (--name)")
    root = Path(out_dir)
    name, config = resolve_config(name_or_config)
    config_file = str(name_or_config) if isinstance(name_or_config, (str, os.PathLike)) else None
    if config_name is None:
        check_config_name(name, f"{name_or_config}: name")
    name = config_name or name
    claim_output_dir(root, "generate", overwrite=overwrite, inputs=[config_file])
    if (root / name).exists() and not (root / name).is_dir():
        raise ValueError(
            f"out_dir: {str(root / name)!r} is a file in the way of config {name!r}; fix: move it."
        )
    overrides = {}
    if num_tasks is not None:
        overrides["num_tasks"] = int(num_tasks)
    if num_eval_tasks is not None:
        overrides["num_eval_tasks"] = int(num_eval_tasks)
    config = dataclasses.replace(config, **overrides)
    if tasks_per_shard < 1:
        raise ValueError(f"tasks_per_shard={tasks_per_shard} must be >= 1.")
    cfg_dir = root / name
    cfg_dir.mkdir(parents=True, exist_ok=True)
    schema = features_for(config).arrow_schema
    counts, num_bytes = {}, {}
    for split in SPLIT_NAMES:
        n = num_tasks_for(config, split)
        for old in cfg_dir.glob(f"{split}-*.parquet"):
            old.unlink()  # a re-export replaces the split, never mixes two runs
        if n == 0:
            continue  # no shard and no card entry: load_dataset refuses a listed split without rows
        n_shards = max(1, math.ceil(n / tasks_per_shard))
        bar = tqdm(total=n, desc=f"{name}/{split}", unit="task", disable=not progress)
        for shard in range(n_shards):
            start, stop = shard * tasks_per_shard, min((shard + 1) * tasks_per_shard, n)
            path = cfg_dir / f"{split}-{shard:05d}-of-{n_shards:05d}.parquet"
            with pq.ParquetWriter(path, schema) as writer:
                for s in range(start, stop, 1024):  # bounded memory within a shard
                    writer.write_table(generate_table(config, s, min(s + 1024, stop), split))
                    bar.update(min(s + 1024, stop) - s)
        bar.close()
        counts[split] = n
        num_bytes[split] = sum(p.stat().st_size for p in cfg_dir.glob(f"{split}-*.parquet"))
    write_dataset_readme(root, name, config, counts, num_bytes)
    return cfg_dir
