"""``hf-cot-distill sweep``: a grid of recipe overrides, one output folder per point, a summary.

A sweep YAML::

    recipe: recipes/tiny/kd_messages.yaml        # the base recipe
    output_root: outputs/sweeps/allocation_x_lsp
    grid:                                        # the cartesian product of these values
      supervision_preset: [cot, prompt+cot+answer]
      truncation_kwargs: [{lead_span_proportion: 0.5}, {lead_span_proportion: 1.0}]
      seed: [0, 1, 2]
    set:                                         # fixed overrides of every point
      max_steps: 50

Keys of ``grid`` and ``set`` are recipe fields (unknown ones are an error, as in recipes).
Points run one after another in this process; a point whose ``train_metrics.json`` already
exists is skipped (re-running a sweep resumes it). ``summary.json`` / ``summary.md`` list the
grid values and the final metrics of every point.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from hf_cot_distill.recipe import DataArguments, ModelArguments, parse_recipe, recipe_argv

SWEEP_KEYS = {"recipe", "output_root", "grid", "set"}


def _types() -> tuple[type, ...]:
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    return (ModelArguments, DataArguments, SectionKDConfig)


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as fh:
        spec = yaml.safe_load(fh) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep is a mapping with keys {sorted(SWEEP_KEYS)}.")
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown sweep keys {unknown}; use {sorted(SWEEP_KEYS)}.")
    for key in ("recipe", "output_root", "grid"):
        if key not in spec:
            raise ValueError(f"{path}: missing {key!r}.")
    grid = spec["grid"]
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: grid must map recipe fields to non-empty lists of values.")
    spec.setdefault("set", {})
    recipe_argv({**spec["set"], **{k: v[0] for k, v in grid.items()}}, _types(), where=f"{path} (grid/set)")
    return spec


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A readable folder name for a grid point (``key=value`` parts; dicts flattened)."""
    parts = []
    for key, value in point.items():
        if isinstance(value, dict):
            parts.extend(f"{k}={v}" for k, v in value.items())
        else:
            parts.append(f"{key}={value}")
    return re.sub(r"[^A-Za-z0-9=._+-]", "_", "__".join(parts))


def run_sweep(path: str | os.PathLike, extra_overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every grid point (skipping finished ones); return and write the summary."""
    from hf_cot_distill.train import run_training

    spec = load_sweep(path)
    root = Path(spec["output_root"])
    root.mkdir(parents=True, exist_ok=True)
    summary = []
    for point in grid_points(spec["grid"]):
        out = root / point_name(point)
        metrics_file = out / "train_metrics.json"
        if not metrics_file.is_file():
            overrides = recipe_argv({**spec["set"], **point}, _types(), where=str(path))
            overrides += ["--output_dir", str(out), *(extra_overrides or [])]
            model_args, data_args, kd_args = parse_recipe(_types(), spec["recipe"], overrides)
            run_training(model_args, data_args, kd_args, recipe_path=spec["recipe"])
        metrics = json.loads(metrics_file.read_text())
        summary.append({"point": point, "output_dir": str(out), "metrics": metrics})
    (root / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    (root / "summary.md").write_text(summary_table(summary))
    return summary


def summary_table(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return "(empty sweep)\n"
    grid_keys = list(summary[0]["point"])
    metric_keys = sorted({k for s in summary for k, v in s["metrics"].items() if isinstance(v, (int, float))})
    head = grid_keys + metric_keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [
            json.dumps(s["point"][k]) if isinstance(s["point"][k], dict) else str(s["point"][k])
            for k in grid_keys
        ]
        for k in metric_keys:
            v = s["metrics"].get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
