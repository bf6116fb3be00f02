"""The recipes that ship inside the package, addressable by name.

Every YAML (and DeepSpeed JSON) under ``hf_cot_distill/recipes/`` is package data; the
repository's top-level ``recipes/`` is a link to it, so ``recipes/tiny/kd_messages.yaml`` works
from a checkout and ``tiny/kd_messages`` from anywhere. One rule resolves a name everywhere a
recipe, a generator YAML or a DeepSpeed config is read: **a path that exists wins**; otherwise
the name is looked up in the packaged folder, with or without the ``recipes/`` prefix and the
``.yaml`` suffix (so the references between packaged recipes, written as
``recipes/generators/demo_cot_icl.yaml``, resolve outside the repository too).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The packaged recipes folder (``recipes/`` of the repository links here).
RECIPES_DIR: Path = Path(__file__).resolve().parents[1] / "recipes"
RECIPE_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json")
_PREFIX = "recipes/"


def list_recipes() -> list[str]:
    """Every packaged recipe by name: ``distill/qwen2.5-7b_to_0.5b_cot_only_lsp0.5`` (YAML names
    without the suffix; JSON files keep theirs, e.g. ``deepspeed/zero3.json``), sorted."""
    names = []
    for path in sorted(RECIPES_DIR.rglob("*")):
        if path.is_file() and path.suffix in RECIPE_SUFFIXES:
            rel = path.relative_to(RECIPES_DIR).as_posix()
            names.append(rel.removesuffix(".yaml") if path.suffix == ".yaml" else rel)
    return names


def packaged_recipe(name: str | os.PathLike) -> Path | None:
    """The packaged file that ``name`` names (see the module doc), or None."""
    text = Path(name).as_posix().removeprefix("./")
    rel = text.removeprefix(_PREFIX)
    if not rel or rel.startswith("/") or ".." in Path(rel).parts:
        return None
    for candidate in (rel, rel + ".yaml"):
        path = RECIPES_DIR / candidate
        if path.is_file() and path.suffix in RECIPE_SUFFIXES:
            return path
    return None


def resolve_recipe(name_or_path: str | os.PathLike, what: str = "recipe") -> Path:
    """A path that exists, else the packaged recipe of that name; else ``FileNotFoundError``
    naming both places and how to list the packaged ones."""
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir():
            raise FileNotFoundError(
                f"{what} {str(name_or_path)!r} is a folder, not a file; fix: pass a YAML file or a "
                "packaged name (`hf-cot-distill recipes list`)."
            )
        return path
    packaged = packaged_recipe(name_or_path)
    if packaged is not None:
        return packaged
    raise FileNotFoundError(
        f"{what} {str(name_or_path)!r}: no such file (paths are relative to the current directory, "
        f"{Path.cwd()}) and no packaged recipe of that name; fix: pass an existing file, or a name from "
        "`hf-cot-distill recipes list` (e.g. tiny/kd_messages)."
    )


def copy_recipe(name: str, dest: str | os.PathLike) -> Path:
    """Copy the packaged recipe ``name`` to ``dest`` (a file path, or an existing folder to copy
    into). Never replaces a file: an existing target is a ``FileExistsError``."""
    source = packaged_recipe(name)
    if source is None:
        raise FileNotFoundError(
            f"recipe {name!r} is not a packaged recipe; fix: pick a name from `hf-cot-distill recipes list`."
        )
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise FileExistsError(f"{target} exists; fix: choose another destination (nothing was written).")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"{target.parent} is not a folder; fix: create it first or choose another destination."
        )
    shutil.copyfile(source, target)
    return target
