"""Card rendering (no network): Jinja templates from ``hub_cards/`` through `huggingface_hub` card classes.

Publishing lives in ``hub.py``; this module only turns configs and counts into card text.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

# ``hf_cot_distill/templates`` is a link to the top-level ``hub_cards/`` folder, shipped as
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


def _plain(value: Any) -> Any:
    """Config values as YAML-safe plain data (tuples -> lists, inf -> 'inf', dataclasses -> dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
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
    entries: dict[str, dict] = {}
    if readme.is_file():
        old = DatasetCard.load(readme).data.to_dict()
        for entry in old.get("hf_cot_distill", {}).get("generator_configs", []):
            entries[entry["name"]] = entry
    entries[name] = config_entry(name, config, counts, num_bytes)
    ordered = [entries[k] for k in sorted(entries)]
    card_data = DatasetCardData(
        license="apache-2.0",
        tags=["synthetic", "chain-of-thought", "in-context-learning", "hf-cot-distill"],
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
    card = DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md.j2")),
        pretty_name="hf_cot_distill synthetic CoT tasks",
        generator_configs=ordered,
        repo_or_path=str(root),
        has_cot_icl=any(e["kind"] == "cot_icl_lab" for e in ordered),
        has_symbolic=any(e["kind"] == "symbolic" for e in ordered),
    )
    card.save(readme)
    return readme
