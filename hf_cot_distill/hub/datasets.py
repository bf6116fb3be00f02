"""Dataset export: generator rows as parquet shards plus a dataset card, the layout the Hub serves.

``export_dataset(...)`` (the ``hf-cot-distill generate`` command) writes
``out_dir/<config>/{train,eval}-XXXXX-of-YYYYY.parquet`` and a README with ``configs:`` YAML so
that ``load_dataset(out_dir, "<config>")`` gives the same rows as the builder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hf_cot_distill.core.outputs import check_output_dir, claim_output_dir, nearest_existing
from hf_cot_distill.data.builder import (
    SPLIT_NAMES,
    GeneratorConfig,
    features_for,
    generate_table,
    num_tasks_for,
    resolve_config,
)
from hf_cot_distill.hub.cards import write_dataset_readme


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def estimate_export(config: GeneratorConfig, n_tasks: int, root: Path, sample: int = 64) -> dict[str, float]:
    """Bytes and seconds an export of ``n_tasks`` will take, from a timed sample of ``sample``
    tasks; ``ValueError`` (before anything is written) when the estimate exceeds the free space of
    the disk that holds ``root``."""
    import io
    import time

    k = max(1, min(sample, n_tasks))
    start = time.perf_counter()
    table = generate_table(config, 0, k, "train")
    seconds = (time.perf_counter() - start) / k * n_tasks
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    total = buffer.tell() / k * n_tasks * 1.1  # parquet pages and metadata vary a little
    existing = nearest_existing(root)
    free = shutil.disk_usage(existing).free
    if total > free:
        raise ValueError(
            f"num_tasks: {n_tasks:,} tasks would take about {_human(total)} ({_duration(seconds)}), but the disk of "
            f"{existing} has {_human(free)} free; nothing was written; fix: fewer tasks (--num-tasks), or another --out."
        )
    return {"bytes": total, "seconds": seconds}


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
    check_output_dir(root, "generate", overwrite=overwrite, inputs=[config_file])
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
    sizes = {split: num_tasks_for(config, split) for split in SPLIT_NAMES}
    estimate = estimate_export(config, sum(sizes.values()), root)
    if progress:
        print(
            f"{name}: {sum(sizes.values()):,} tasks, about {_human(estimate['bytes'])} and {_duration(estimate['seconds'])}"
        )
    claim_output_dir(root, "generate", overwrite=overwrite, inputs=[config_file])
    cfg_dir.mkdir(parents=True, exist_ok=True)
    # New shards go to a hidden staging folder and replace the old ones only once complete: an
    # interrupted export leaves the previous data (or nothing) for load_dataset, never a mix.
    staging = cfg_dir / ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    schema = features_for(config).arrow_schema
    counts, num_bytes = {}, {}
    for split in SPLIT_NAMES:
        n = sizes[split]
        if n == 0:
            continue  # no shard and no card entry: load_dataset refuses a listed split without rows
        n_shards = max(1, math.ceil(n / tasks_per_shard))
        bar = tqdm(total=n, desc=f"{name}/{split}", unit="task", disable=not progress)
        for shard in range(n_shards):
            start, stop = shard * tasks_per_shard, min((shard + 1) * tasks_per_shard, n)
            path = staging / f"{split}-{shard:05d}-of-{n_shards:05d}.parquet"
            with pq.ParquetWriter(path, schema) as writer:
                for s in range(start, stop, 1024):  # bounded memory within a shard
                    writer.write_table(generate_table(config, s, min(s + 1024, stop), split))
                    bar.update(min(s + 1024, stop) - s)
        bar.close()
        counts[split] = n
        num_bytes[split] = sum(p.stat().st_size for p in staging.glob(f"{split}-*.parquet"))
    for old in cfg_dir.glob("*.parquet"):
        old.unlink()  # a re-export replaces the splits, never mixes two runs
    for new in staging.iterdir():
        os.replace(new, cfg_dir / new.name)
    staging.rmdir()
    write_dataset_readme(root, name, config, counts, num_bytes)
    return cfg_dir
