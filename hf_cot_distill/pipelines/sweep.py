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

Keys of ``grid`` and ``set`` are recipe fields (unknown ones are an error, as in recipes). Every
point's full recipe is parsed before anything is created or trained, so a bad value in any point
fails at once. Relative paths (``recipe``, ``output_root``) are read from the current directory.

Points run one after another in this process. Each point folder records the settings it was
trained with (``sweep_point.json``: the recipe path, the recipe's fields with ``set`` and the
point applied). A re-run skips a point whose ``train_metrics.json`` exists *and* whose record
matches (re-running a sweep resumes it); a folder trained with other settings, or holding files
but no record, is refused before anything trains (use a new ``output_root`` or delete the folder).
``summary.json`` / ``summary.md`` list the grid values and the final metrics of every point.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from hf_cot_distill.core.resources import resolve_recipe
from hf_cot_distill.core.tables import markdown_table
from hf_cot_distill.pipelines.recipe import (
    load_recipe_yaml,
    parse_recipe,
    recipe_argv,
    train_config_types,
)

SWEEP_KEYS = {"recipe", "output_root", "grid", "set"}
POINT_RECORD = "sweep_point.json"  # in every point folder: the settings it was trained with


def _kind(value: Any) -> str:
    return f"a {type(value).__name__} ({value!r})"


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep YAML: its keys and their types, and every grid point's field names.

    The points' values are checked against the recipe by :func:`run_sweep` (which parses every
    point's full recipe before training)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"sweep file {path} not found (relative paths are read from {os.getcwd()}); "
            "fix: pass --config the path of a sweep YAML."
        )
    try:
        with open(path) as fh:
            spec = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep is a mapping with keys {sorted(SWEEP_KEYS)}, got {_kind(spec)}.")
    unknown = sorted(map(str, set(spec) - SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown sweep keys {unknown}; use {sorted(SWEEP_KEYS)}.")
    for key in ("recipe", "output_root", "grid"):
        if key not in spec:
            raise ValueError(f"{path}: missing {key!r}.")
    for key in ("recipe", "output_root"):
        if not isinstance(spec[key], str) or not spec[key].strip():
            raise ValueError(f"{path}: {key} must be a path, got {_kind(spec[key])}.")
    grid = spec["grid"]
    if not isinstance(grid, dict) or not grid:
        raise ValueError(
            f"{path}: grid must map recipe fields to non-empty lists of values (e.g. `seed: [0, 1]`), "
            f"got {_kind(grid)}."
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"{path}: grid must map recipe fields to non-empty lists of values; {key}: {values!r} "
                f"is not one. fix: `{key}: [{values!r}]` for a single value, or move it to `set`."
            )
    if spec.get("set") is None:
        spec["set"] = {}
    if not isinstance(spec["set"], dict):
        raise ValueError(
            f"{path}: set must map recipe fields to values (e.g. `set: {{max_steps: 50}}`), "
            f"got {_kind(spec['set'])}."
        )
    names: dict[str, dict] = {}
    for point in grid_points(grid):
        recipe_argv({**spec["set"], **point}, train_config_types(), where=f"{path} (grid/set)")
        name = point_name(point)
        if name in names:
            raise ValueError(
                f"{path}: grid points {names[name]} and {point} would share the folder {name!r}; "
                "fix: make the values differ in letters, digits or . _ + - = characters."
            )
        names[name] = point
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


def point_record(spec: dict[str, Any], point: dict[str, Any], extra_overrides: list[str] = ()) -> dict:
    """What a point folder records (``sweep_point.json``) and a re-run compares: the recipe's path,
    its fields with ``set`` and the point applied (``output_dir`` aside), and any extra overrides."""
    settings = {**load_recipe_yaml(spec["recipe"]), **spec["set"], **point}
    settings.pop("output_dir", None)  # the sweep sets it per point
    record = {
        "recipe": str(resolve_recipe(spec["recipe"]).resolve()),
        "settings": settings,
        "extra_overrides": list(extra_overrides),
    }
    return json.loads(json.dumps(record, default=str))  # as it reads back from the file


def _differences(recorded: dict, current: dict) -> list[str]:
    def shown(where: dict, key: str) -> str:
        return json.dumps(where[key]) if key in where else "unset"

    diffs = [
        f"{key} was {shown(recorded, key)}, now {shown(current, key)}"
        for key in ("recipe", "extra_overrides")
        if recorded.get(key) != current[key]
    ]
    old, new = recorded.get("settings"), current["settings"]
    old = old if isinstance(old, dict) else {}
    for key in sorted(set(old) | set(new)):
        if (key in old, old.get(key)) != (key in new, new.get(key)):
            diffs.append(f"{key} was {shown(old, key)}, now {shown(new, key)}")
    return diffs


def _point_is_finished(out: Path, record: dict, path: str | os.PathLike) -> bool:
    """Whether ``out`` holds this point's finished run. Raises ``ValueError`` when it holds
    anything else (another sweep's settings, or files and no record)."""
    if not out.exists():
        return False
    fix = f"fix: set a new output_root in {path}, or delete {out} to train this point again."
    if not out.is_dir():
        raise ValueError(f"{path}: {out} is a file, not a point folder; {fix}")
    record_file = out / POINT_RECORD
    if not record_file.is_file():
        if not any(out.iterdir()):
            return False
        raise ValueError(
            f"{path}: {out} holds files but no {POINT_RECORD} (a run from before sweeps recorded "
            f"their settings, or another program's output), so it cannot be checked against this "
            f"sweep; refusing to reuse or overwrite it. {fix}"
        )
    try:
        recorded = json.loads(record_file.read_text())
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: {record_file} is not a readable sweep record; {fix}")
    diffs = _differences(recorded, record)
    if diffs:
        raise ValueError(
            f"{path}: {out} was trained with other settings ({'; '.join(diffs)}); refusing to "
            f"reuse or overwrite it. {fix}"
        )
    return (out / "train_metrics.json").is_file()


def _parse_point(
    path: str | os.PathLike, spec: dict[str, Any], point: dict[str, Any], out: Path, extra: list[str]
) -> tuple:
    """The point's ``(ModelArguments, DataArguments, SectionKDConfig)``; a bad value is a
    ``ValueError`` naming the sweep file and the point (not argparse's usage and exit)."""
    where = f"{path}: grid point {point_name(point)}"
    overrides = recipe_argv({**spec["set"], **point}, train_config_types(), where=where)
    overrides += ["--output_dir", str(out), *extra]
    try:
        return parse_recipe(train_config_types(), spec["recipe"], overrides)
    except ValueError as err:  # the overrides are the sweep's grid/set, not a command line
        raise ValueError(f"{where}: {str(err).removeprefix('command line: ')}") from None


def run_sweep(path: str | os.PathLike, extra_overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every grid point (skipping finished ones); return and write the summary.

    Everything is checked before anything is created or trained: the sweep file, the recipe,
    every point's full recipe, and every existing point folder against the point's settings."""
    from hf_cot_distill.pipelines.train import run_training

    extra = list(extra_overrides or [])
    spec = load_sweep(path)
    if not os.path.isfile(spec["recipe"]):
        raise FileNotFoundError(
            f"{path}: recipe {spec['recipe']} not found (relative paths are read from the current "
            f"directory {os.getcwd()}); fix: set `recipe` to the recipe's path, absolute or from where you run the sweep."
        )
    root = Path(spec["output_root"])
    if root.exists() and not root.is_dir():
        raise ValueError(f"{path}: output_root {root} is a file; fix: name a folder.")
    plans = []
    for point in grid_points(spec["grid"]):
        out = root / point_name(point)
        args = _parse_point(path, spec, point, out, extra)
        plans.append((point, out, args, point_record(spec, point, extra)))
    refused, finished = [], set()
    for _, out, _, record in plans:
        try:
            if _point_is_finished(out, record, path):
                finished.add(str(out))
        except ValueError as err:
            refused.append(str(err))
    if refused:
        more = len(refused) - 1
        if more:
            refused[0] += f" ({more} more point folder{'s are' if more > 1 else ' is'} refused too.)"
        raise ValueError(refused[0])
    root.mkdir(parents=True, exist_ok=True)
    summary = []
    for point, out, (model_args, data_args, kd_args), record in plans:
        if str(out) not in finished:
            out.mkdir(parents=True, exist_ok=True)
            (out / POINT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
            run_training(model_args, data_args, kd_args, recipe_path=spec["recipe"])
        metrics = json.loads((out / "train_metrics.json").read_text())
        summary.append({"point": point, "output_dir": str(out), "metrics": metrics})
    (root / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    table = markdown_table(*_summary_cells(summary)) if summary else "(empty sweep)\n"
    (root / "summary.md").write_text(table)
    return summary


def _summary_cells(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``summary.md``: one row per grid point, its grid values then its
    numeric metrics."""
    grid_keys = list(summary[0]["point"])
    metric_keys = sorted({k for s in summary for k, v in s["metrics"].items() if isinstance(v, (int, float))})
    rows = []
    for s in summary:
        cells = [
            json.dumps(s["point"][k]) if isinstance(s["point"][k], dict) else str(s["point"][k])
            for k in grid_keys
        ]
        for k in metric_keys:
            v = s["metrics"].get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        rows.append(cells)
    return grid_keys + metric_keys, rows
