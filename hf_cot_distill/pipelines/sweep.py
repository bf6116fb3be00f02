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

**A bad point does not sink the sweep.** A point whose training fails (a refused setting found
only while training, a diverged loss) is recorded with its error in ``summary.md`` /
``summary.json`` (``status: failed``) and the other points run; ``on_error: stop`` (a sweep key)
stops at the first failure instead. The CLI exits 1 when any point failed; a re-run retrains the
failed points and says which finished ones it skips.

**One teacher cache for the sweep.** ``teacher_cache: auto`` (a value of the recipe field
``teacher_cache``: in ``set``, in the grid, e.g. ``teacher_cache: [auto, null]`` to compare with
the online teacher, or in the base recipe) runs the teacher once for the points that share it
instead of once per training step of every point::

    set:
      teacher_cache: auto
    teacher_cache_options: {mode: sampled, samples: 12}   # optional, the defaults shown

Before anything trains, the ``auto`` points are grouped by what a cache depends on: the teacher
(``teacher_model_name_or_path``, ``teacher_dtype``, ``teacher_model_init_kwargs``), the tokenizer
(its fingerprint), the data and encoding settings
(:func:`~hf_cot_distill.pipelines.cache_teacher.encoding_settings`) and the KD ``temperature``.
Each group gets one cache (:func:`~hf_cot_distill.pipelines.cache_teacher.run_cache_teacher`),
``<output_root>/teacher_cache`` (further groups, in grid order: ``teacher_cache-2``,
``teacher_cache-3``, ...), holding the union of the sections its points distil, and its points
train with ``teacher_cache`` set to that folder. ``teacher_cache_options`` (every key optional)
holds the build settings of :class:`~hf_cot_distill.trainers.teacher_cache.CacheSettings`:
``mode`` (``sampled``, the default, or ``topk``), ``samples`` (S = 12), ``k`` (64; a ``k`` of at
least the vocabulary stores the whole distribution: the exact forward KL), ``seed``,
``rows_per_shard``, ``batch_size``, and ``sections`` (``all``, ``cot+answer`` or a list: cache
these, which must cover what the points distil; by default exactly the union).

* A point that distils nothing (no ``teacher_model_name_or_path``, or ``kd_weight: 0``) trains
  without a cache: ``auto`` resolves to none for it (said on stdout and recorded).
* A point that distils but that a cache cannot serve (``divergence`` other than ``forward_kl``,
  ``kd_mode`` other than ``supervised``, ``section_kd_temperatures``) is refused before anything is
  created, naming the point and the field.
* Re-running: a group whose points are all finished builds nothing; otherwise the build resumes a
  partial cache and reuses a complete one. A cache folder built with other settings (another
  ``teacher_cache_options``, a section union that grew with the grid, another teacher or encoding)
  is refused before anything trains.
* Each point's ``sweep_point.json`` records what ``auto`` resolved to (``teacher_cache``: the
  folder, or null) and the cache's build settings (``teacher_cache_build``), so a point trained
  from another cache is a stale point; ``summary.json`` names each point's cache.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_cot_distill.core.outputs import MARKER, check_output_dir, claim_output_dir
from hf_cot_distill.core.resources import resolve_recipe
from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES
from hf_cot_distill.core.tables import markdown_table
from hf_cot_distill.core.validation import check_choice
from hf_cot_distill.pipelines import cache_teacher, training_models
from hf_cot_distill.pipelines.recipe import (
    given_keys,
    load_recipe_yaml,
    parse_recipe,
    recipe_argv,
    train_config_types,
    unused_settings,
    warn_unused,
)
from hf_cot_distill.trainers.teacher_cache import (
    CACHE_INFO,
    CacheSettings,
    fingerprint_tokenizer,
    settings_dict,
)

SWEEP_KEYS = {"recipe", "output_root", "grid", "set", "teacher_cache_options", "on_error"}
ON_ERROR = ("continue", "stop")
POINT_RECORD = "sweep_point.json"  # in every point folder: the settings it was trained with
AUTO = "auto"  # teacher_cache: auto -> the sweep's shared cache
CACHE_FOLDER = "teacher_cache"  # <output_root>/teacher_cache, then teacher_cache-2, ...
CACHE_OPTIONS = ("mode", "samples", "k", "seed", "rows_per_shard", "batch_size", "sections")


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
    check_choice(f"{path}: on_error", spec.get("on_error", "continue"), ON_ERROR)
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
    # a set/grid key the sweep would drop is an error (ignored keys: run_sweep warns)
    both = sorted(map(str, set(spec["set"]) & set(grid)))
    if both:
        raise ValueError(
            f"{path}: {both} in both set and grid: the grid's values would replace set's; fix: keep "
            f"{'it' if len(both) == 1 else 'each'} in one of them."
        )
    if "output_dir" in spec["set"] or "output_dir" in grid:
        raise ValueError(
            f"{path}: output_dir in set/grid is not used: every point is written to <output_root>/<point>; "
            "fix: remove it (and set output_root)."
        )
    cache_options(spec, path)  # checked here, used by run_sweep
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


def cache_options(spec: dict[str, Any], path: str | os.PathLike = "sweep") -> dict[str, Any]:
    """The sweep's ``teacher_cache_options``, checked (``sections`` as a list of names, or absent).

    The keys are :class:`~hf_cot_distill.trainers.teacher_cache.CacheSettings` fields but the
    ``temperature``, which is each group's own."""
    options = spec.get("teacher_cache_options")
    if options is None:
        return {}
    example = "e.g. `teacher_cache_options: {mode: sampled, samples: 12}`"
    if not isinstance(options, dict):
        raise ValueError(
            f"{path}: teacher_cache_options must map cache settings {list(CACHE_OPTIONS)} to values ({example}), "
            f"got {_kind(options)}."
        )
    unknown = sorted(map(str, set(options) - set(CACHE_OPTIONS)))
    if unknown:
        raise ValueError(
            f"{path}: teacher_cache_options: unknown keys {unknown}; use {list(CACHE_OPTIONS)} (the temperature "
            "is the points' own `temperature`)."
        )
    options = dict(options)
    if "sections" in options:
        sections = options["sections"]
        if sections == "all":
            sections = list(CONTENT_SECTION_NAMES)
        elif isinstance(sections, str):
            sections = [s.strip() for s in re.split(r"[+,]", sections) if s.strip()]
        if not isinstance(sections, list):
            raise ValueError(
                f"{path}: teacher_cache_options: sections must be `all`, names joined by + (`cot+answer`) or a "
                f"list of names among {list(CONTENT_SECTION_NAMES)}, got {_kind(options['sections'])}."
            )
        options["sections"] = sections
    try:
        CacheSettings(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: teacher_cache_options: {err}") from None
    return options


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


def point_record(
    spec: dict[str, Any],
    point: dict[str, Any],
    extra_overrides: list[str] = (),
    teacher_cache: tuple[str | None, dict[str, Any] | None] | None = None,
) -> dict:
    """What a point folder records (``sweep_point.json``) and a re-run compares: the recipe's path,
    its fields with ``set`` and the point applied (``output_dir`` aside), and any extra overrides.

    ``teacher_cache``: for a ``teacher_cache: auto`` point, what it resolved to: ``(folder or None,
    the cache's build settings or None)``."""
    settings = {**load_recipe_yaml(spec["recipe"]), **spec["set"], **point}
    settings.pop("output_dir", None)  # the sweep sets it per point
    record = {
        "recipe": str(resolve_recipe(spec["recipe"]).resolve()),
        "settings": settings,
        "extra_overrides": list(extra_overrides),
    }
    if teacher_cache is not None:
        settings["teacher_cache"], build = teacher_cache
        if build is not None:
            record["teacher_cache_build"] = build
    return json.loads(json.dumps(record, default=str))  # as it reads back from the file


def _differences(recorded: dict, current: dict) -> list[str]:
    def shown(where: dict, key: str) -> str:
        return json.dumps(where[key]) if key in where else "unset"

    diffs = [
        f"{key} was {shown(recorded, key)}, now {shown(current, key)}"
        for key in ("recipe", "extra_overrides", "teacher_cache_build")
        if recorded.get(key) != current.get(key)
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
    path: str | os.PathLike,
    spec: dict[str, Any],
    point: dict[str, Any],
    out: Path,
    extra: list[str],
    teacher_cache: str | None = None,
) -> tuple:
    """The point's ``(ModelArguments, DataArguments, SectionKDConfig)``; a bad value is a
    ``ValueError`` naming the sweep file and the point (not argparse's usage and exit).

    A ``teacher_cache: auto`` of the point becomes ``teacher_cache`` (its group's folder), or no
    cache when that is ``None``; other values are parsed as written."""
    where = f"{path}: grid point {point_name(point)}"
    values = {**spec["set"], **point}
    if values.get("teacher_cache") == AUTO:
        values.pop("teacher_cache")
    if teacher_cache is not None:
        values["teacher_cache"] = teacher_cache
        where += f" (teacher_cache: auto -> {teacher_cache})"
    overrides = recipe_argv(values, train_config_types(), where=where)
    overrides += ["--output_dir", str(out), *extra]
    try:
        args = parse_recipe(train_config_types(), spec["recipe"], overrides)
    except ValueError as err:  # the overrides are the sweep's grid/set, not a command line
        raise ValueError(f"{where}: {str(err).removeprefix('command line: ')}") from None
    if args[2].teacher_cache == AUTO:  # the base recipe's `auto`, with no folder for it (yet)
        args[2].teacher_cache = None
    return args


# ---------------------------------------------------------------------------------------------
# teacher_cache: auto
# ---------------------------------------------------------------------------------------------


@dataclass
class _Point:
    """One grid point's plan: its folder, parsed arguments, record, and cache group (if any)."""

    point: dict[str, Any]
    out: Path
    args: tuple
    auto: bool  # its teacher_cache is `auto`
    cache: _CacheGroup | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return point_name(self.point)


@dataclass
class _CacheGroup:
    """The points that share one cache, the cache's folder and build settings."""

    folder: Path
    points: list[_Point] = field(default_factory=list)
    sections: set[str] = field(default_factory=set)
    settings: CacheSettings | None = None


def _no_distillation(kd_args: Any) -> str | None:
    """Why a point distils nothing (it then needs no cache), or ``None`` when it distils."""
    if not kd_args.teacher_model_name_or_path:
        return "no teacher_model_name_or_path"
    if kd_args.kd_weight <= 0:
        return f"kd_weight={kd_args.kd_weight!r}"
    try:
        cache_teacher.default_sections(kd_args)
    except ValueError:
        return f"supervision_preset={kd_args.supervision_preset!r} distils no section"
    return None


def _local(path: Any) -> Any:
    """A local path made absolute (two spellings of one folder share a cache); else unchanged."""
    return os.path.abspath(path) if isinstance(path, str) and os.path.exists(path) else path


def _cache_key(args: tuple, tokenizers: dict[tuple, str | None]) -> str:
    """What a cache depends on, as one string: points with equal keys share a cache."""
    model_args, data_args, kd_args = args
    source = (
        _local(model_args.tokenizer_name_or_path),
        _local(model_args.model_name_or_path),
        model_args.student_from_teacher_layers is not None,
        model_args.trust_remote_code,
        _local(kd_args.teacher_model_name_or_path),
    )
    if source not in tokenizers:  # the fingerprint a cache is checked against (one load per source)
        tokenizers[source] = fingerprint_tokenizer(
            training_models.load_tokenizers(model_args, kd_args).student
        )
    key = {
        "teacher": _local(kd_args.teacher_model_name_or_path),
        "teacher_dtype": kd_args.teacher_dtype,
        "teacher_model_init_kwargs": kd_args.teacher_model_init_kwargs,
        "tokenizer_fingerprint": tokenizers[source],
        "encoding": cache_teacher.encoding_settings(data_args),
        "temperature": float(kd_args.temperature),
    }
    return json.dumps(key, sort_keys=True, default=str)


def _plan_caches(
    path: str | os.PathLike,
    spec: dict[str, Any],
    root: Path,
    plans: list[_Point],
    options: dict[str, Any],
    extra: list[str],
) -> list[_CacheGroup]:
    """Group the ``auto`` points that distil, give each group a folder and build settings, and
    re-parse those points with their folder (which refuses a point a cache cannot serve)."""
    groups: dict[str, _CacheGroup] = {}
    tokenizers: dict[tuple, str | None] = {}
    for plan in plans:
        if not plan.auto:
            continue
        why = _no_distillation(plan.args[2])
        if why is not None:
            print(f"{path}: grid point {plan.name}: teacher_cache: auto -> none ({why}: nothing to distil)")
            continue
        key = _cache_key(plan.args, tokenizers)
        if key not in groups:
            name = CACHE_FOLDER if not groups else f"{CACHE_FOLDER}-{len(groups) + 1}"
            groups[key] = _CacheGroup(root / name)
        plan.cache = groups[key]
        plan.cache.points.append(plan)
        plan.cache.sections |= set(cache_teacher.default_sections(plan.args[2]))
    build = {k: v for k, v in options.items() if k != "sections"}
    for group in groups.values():
        chosen = options.get("sections")
        if chosen is not None:
            for plan in group.points:
                missing = sorted(set(cache_teacher.default_sections(plan.args[2])) - set(chosen))
                if missing:
                    raise ValueError(
                        f"{path}: grid point {plan.name} distils {missing}, which teacher_cache_options.sections "
                        f"{chosen} leaves out; fix: add them to sections, or drop sections (the default caches "
                        "what the points distil)."
                    )
        sections = tuple(chosen if chosen is not None else group.sections)
        temperature = float(group.points[0].args[2].temperature)
        group.settings = CacheSettings(temperature=temperature, sections=sections, **build)
    for plan in plans:
        if plan.cache is not None:
            plan.args = _parse_point(
                path, spec, plan.point, plan.out, extra, teacher_cache=str(plan.cache.folder)
            )
    return list(groups.values())


def _check_cache_folder(group: _CacheGroup, path: str | os.PathLike) -> None:
    """Refuse (``ValueError``) a group folder that is neither missing, empty, nor a cache of the
    group's settings, teacher and encoding (the build checks the fingerprints too)."""
    folder = group.folder
    if not folder.exists():
        return
    trained = ", ".join(p.name for p in group.points[:3]) + (", ..." if len(group.points) > 3 else "")
    fix = (
        f"fix: set a new output_root in {path}, or delete {folder} and the point folders trained from it "
        f"({trained})."
    )
    if not folder.is_dir():
        raise ValueError(f"{path}: {folder} is a file, not the sweep's teacher cache folder; {fix}")
    info_file = folder / CACHE_INFO
    if not info_file.is_file():
        if any(p.name != MARKER for p in folder.iterdir()):  # only the marker: a build cut short
            raise ValueError(
                f"{path}: {folder} holds files but no {CACHE_INFO}, so it is not the sweep's teacher cache; "
                f"refusing to build into it. {fix}"
            )
        return
    try:
        info = json.loads(info_file.read_text())
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: {info_file} is not a readable teacher cache record; {fix}")
    _, data_args, kd_args = group.points[0].args
    planned = {
        "settings": settings_dict(group.settings),
        "encoding": cache_teacher.encoding_settings(data_args),
        "teacher": kd_args.teacher_model_name_or_path,
    }
    planned = json.loads(json.dumps(planned, default=str))
    diffs = []
    for key, value in planned.items():
        old = info.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            diffs += [
                f"{key}.{k} was {json.dumps(old.get(k))}, now {json.dumps(value.get(k))}"
                for k in sorted(set(old) | set(value))
                if old.get(k) != value.get(k)
            ]
        elif old != value:
            diffs.append(f"{key} was {json.dumps(old)}, now {json.dumps(value)}")
    if diffs:
        raise ValueError(
            f"{path}: the teacher cache {folder} was built with other settings ({'; '.join(diffs)}); refusing "
            f"to reuse or overwrite it. {fix}"
        )


def _build_caches(groups: list[_CacheGroup], finished: set[str], path: str | os.PathLike) -> None:
    """Build (or resume, or find complete) the cache of every group with a point left to train."""
    for group in groups:
        if all(str(p.out) in finished for p in group.points):
            continue
        model_args, data_args, kd_args = group.points[0].args  # the same point on every run
        settings = group.settings
        size = f"S={settings.samples}" if settings.mode == "sampled" else f"K={settings.k}"
        print(
            f"{path}: teacher cache {group.folder} ({settings.mode} {size}, sections "
            f"{'+'.join(settings.sections)}, T={settings.temperature:g}) for {len(group.points)} points",
            flush=True,
        )
        try:
            cache_teacher.run_cache_teacher(model_args, data_args, kd_args, settings, group.folder)
        except ValueError as err:
            raise ValueError(f"{path}: the sweep's teacher cache {group.folder}: {err}") from None


def warn_ignored_keys(
    path: str | os.PathLike, spec: dict[str, Any], base: dict[str, Any], plans: list, extra: list[str]
) -> list[str]:
    """Warn (one line per reason) about the recipe, ``set`` and grid keys that no point uses (e.g.
    ``lora_r`` without ``use_peft``; :func:`hf_cot_distill.pipelines.recipe.unused_settings`), and
    ``teacher_cache_options`` when no point has ``teacher_cache: auto``. Returns the lines."""
    keys = given_keys({**base, **spec["set"], **spec["grid"]}, extra)
    unused: dict[str, str] | None = None
    for plan in plans:  # unused by every point (a grid may switch a key on for some points)
        found = unused_settings("sweep", keys, plan.args)
        unused = found if unused is None else {k: v for k, v in unused.items() if k in found}
    lines = warn_unused(str(path), "sweep", unused or {})
    if spec.get("teacher_cache_options") and not any(plan.auto for plan in plans):
        lines.append(
            f"{path}: `sweep` does not use teacher_cache_options: only used by points with teacher_cache: auto; "
            "remove it to silence this."
        )
        from hf_cot_distill.core.console import warn

        warn(lines[-1])
    return lines


def run_sweep(path: str | os.PathLike, extra_overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every grid point (skipping finished ones); return and write the summary.

    Everything is checked before anything is created or trained: the sweep file, the recipe,
    every point's full recipe, every existing point folder against the point's settings, and
    (``teacher_cache: auto``) the shared caches' folders; then the caches are built, then the
    points train."""
    from hf_cot_distill.pipelines.train import run_training

    extra = list(extra_overrides or [])
    spec = load_sweep(path)
    if not os.path.isfile(spec["recipe"]):
        raise FileNotFoundError(
            f"{path}: recipe {spec['recipe']} not found (relative paths are read from the current "
            f"directory {os.getcwd()}); fix: set `recipe` to the recipe's path, absolute or from where you run the sweep."
        )
    root = Path(spec["output_root"])
    # The one output rule: a new or empty folder, or one a sweep wrote (resuming); never the cwd,
    # home, a folder of the user's, or one holding the recipe or the sweep file.
    owner = {"inputs": {"recipe": spec["recipe"], "sweep file": path}, "flag": f"{path}: output_root"}
    check_output_dir(root, "sweep", overwrite_flag=None, **owner)
    base = load_recipe_yaml(spec["recipe"])
    plans = []
    for point in grid_points(spec["grid"]):
        out = root / point_name(point)
        auto = {**base, **spec["set"], **point}.get("teacher_cache") == AUTO
        plans.append(_Point(point, out, _parse_point(path, spec, point, out, extra), auto))
    groups = _plan_caches(path, spec, root, plans, cache_options(spec, path), extra)
    warn_ignored_keys(path, spec, base, plans, extra)
    for plan in plans:
        cache = plan.cache
        resolved = (str(cache.folder), settings_dict(cache.settings)) if cache else (None, None)
        plan.record = point_record(spec, plan.point, extra, resolved if plan.auto else None)
    refused, finished = [], set()
    for plan in plans:
        try:
            if _point_is_finished(plan.out, plan.record, path):
                finished.add(str(plan.out))
        except ValueError as err:
            refused.append(str(err))
    caches_refused = []
    for group in groups:
        try:
            _check_cache_folder(group, path)
        except ValueError as err:
            caches_refused.append(str(err))
    if refused or caches_refused:
        first = (caches_refused + refused)[0]
        more = [
            (len(caches_refused) - 1, "teacher cache folder"),
            (len(refused) - (not caches_refused), "point folder"),
        ]
        more = [f"{n} more {what}{'s are' if n > 1 else ' is'} refused too" for n, what in more if n > 0]
        raise ValueError(first + (f" ({'; '.join(more)}.)" if more else ""))
    claim_output_dir(root, "sweep", overwrite_flag=None, **owner)
    _build_caches(groups, finished, path)
    summary = []
    stop = spec.get("on_error", "continue") == "stop"
    for plan in plans:
        model_args, data_args, kd_args = plan.args
        entry: dict[str, Any] = {"point": plan.point, "output_dir": str(plan.out), "status": "ok"}
        if plan.cache is not None:
            entry["teacher_cache"] = str(plan.cache.folder)
        summary.append(entry)
        if str(plan.out) in finished:
            print(f"{path}: grid point {point_name(plan.point)}: finished before, skipped")
        else:
            plan.out.mkdir(parents=True, exist_ok=True)
            (plan.out / POINT_RECORD).write_text(json.dumps(plan.record, indent=2, sort_keys=True))
            (plan.out / "train_metrics.json").unlink(missing_ok=True)  # a failed try leaves none behind
            try:
                run_training(model_args, data_args, kd_args, recipe_path=spec["recipe"])
            except (ValueError, FileNotFoundError, RuntimeError) as err:  # one point, not the sweep
                entry.update(status="failed", error=f"{type(err).__name__}: {err}", metrics={})
                print(f"{path}: grid point {point_name(plan.point)} failed: {err}", file=sys.stderr)
                if stop:
                    break
                continue
        entry["metrics"] = json.loads((plan.out / "train_metrics.json").read_text())
    (root / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    table = markdown_table(*_summary_cells(summary)) if summary else "(empty sweep)\n"
    (root / "summary.md").write_text(table)
    return summary


def _summary_cells(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``summary.md``: one row per grid point, its grid values then its
    numeric metrics."""
    grid_keys = list(summary[0]["point"])
    metric_keys = sorted({k for s in summary for k, v in s["metrics"].items() if isinstance(v, (int, float))})
    failed = any(s.get("status") == "failed" for s in summary)
    rows = []
    for s in summary:
        cells = [
            json.dumps(s["point"][k]) if isinstance(s["point"][k], dict) else str(s["point"][k])
            for k in grid_keys
        ]
        for k in metric_keys:
            v = s["metrics"].get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        if failed:
            cells.append(s["error"] if s.get("status") == "failed" else "ok")
        rows.append(cells)
    return grid_keys + metric_keys + (["status"] if failed else []), rows
