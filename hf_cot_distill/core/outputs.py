"""The one output-folder rule: a command writes only into a folder that is new or empty, that it
wrote itself before, or that the user told it to overwrite — never over what the user owns.

:func:`claim_output_dir` is called by every writer before it writes anything. A folder it claims
gets a small marker file (:data:`MARKER`) naming the command, so a later run of the same command
can add to or resume its own output (``generate`` adding a config, ``cache-teacher`` resuming),
while any other non-empty folder is refused with the fix. Refused always, overwrite or not: a
path that is a file, the current folder or one of its parents, the home folder, the filesystem
root, and a folder that holds, or lies inside, one of the command's inputs. A path that cannot be
created (under a file, read-only, a pseudo filesystem) is one line, not a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

MARKER = ".hf-cot-distill-output.json"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def written_by(folder: str | os.PathLike) -> str | None:
    """The command that claimed ``folder`` (its marker), or None."""
    marker = Path(folder) / MARKER
    try:
        return json.loads(marker.read_text()).get("command") if marker.is_file() else None
    except (OSError, ValueError):
        return None


def contents(folder: Path, shown: int = 5) -> str:
    """The first ``shown`` entries of ``folder`` (folders with ``/``, the marker left out), e.g.
    ``checkpoint-2/, notes.txt and 3 more``, for a refusal message."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name != MARKER)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists, else its nearest existing parent (what a writer would create
    its folders under)."""
    parent = Path(path).resolve()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_location(
    path: str | os.PathLike,
    command: str,
    *,
    inputs: Iterable[str | os.PathLike | None] | Mapping[str, str | os.PathLike | None] = (),
    flag: str = "--out",
) -> Path:
    """The refusals that hold whatever the flags: ``path`` is a file, the current folder or one of
    its parents, the home folder or the filesystem root, lies inside (or holds) one of ``inputs``,
    or would be created under a file (``inputs`` as a mapping: field -> path, to name the field).
    ``ValueError`` naming ``flag``, the path and the fix."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out}: is a file; fix: give a folder path (a new or empty folder).")
    resolved = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == Path(resolved.anchor) or resolved == home or _inside(cwd, resolved):
        raise ValueError(
            f"{flag} {out}: is the current folder, one of its parents, the home folder or the filesystem root; "
            f"fix: give a dedicated new folder, e.g. {flag} ./{command}_output."
        )
    named = inputs.items() if isinstance(inputs, Mapping) else ((None, given) for given in inputs)
    for name, given in named:
        if not given:
            continue
        source = Path(given)
        if not source.exists():
            continue
        source = source.resolve()
        if _inside(resolved, source) or _inside(source, resolved):
            what = f"{name}={str(given)!r}" if name else str(given)
            raise ValueError(
                f"{flag} {out}: lies inside (or holds) the input {what}; writing there could replace the input's "
                "files; fix: give a folder outside every input."
            )
    parent = nearest_existing(resolved.parent)
    if not parent.is_dir():
        raise ValueError(f"{flag} {out}: {parent} is a file, not a folder; fix: a folder path.")
    return out


def check_output_dir(
    path: str | os.PathLike,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    flag: str = "--out",
    overwrite_flag: str | None = "--overwrite",
) -> Path:
    """Check ``path`` for ``command`` (e.g. ``"generate"``) without writing anything.

    Allowed: a missing or empty folder, one this command claimed before, or any other folder
    when ``overwrite`` is true (the caller then replaces only the files it writes). ``inputs``:
    the local paths the command reads (model, dataset, config folders). ``overwrite_flag``: how the
    user asks for ``overwrite`` (named in the fix; ``None`` when the command has no such option).
    ``ValueError`` otherwise, naming ``flag``, the path and the fix (:func:`check_output_location`).
    """
    out = check_output_location(path, command, inputs=inputs, flag=flag)
    owner = written_by(out) if out.is_dir() else None
    if out.is_dir() and any(p.name != MARKER for p in out.iterdir()) and owner != command and not overwrite:
        whose = f"written by `hf-cot-distill {owner}`" if owner else "not written by hf-cot-distill"
        allow = (
            f", or pass {overwrite_flag} to let `{command}` write its files there" if overwrite_flag else ""
        )
        raise ValueError(
            f"{flag} {out}: is not empty ({contents(out)}) and {whose}; nothing was written; fix: give "
            f"a new or empty folder{allow}."
        )
    return out


def claim_output_dir(
    path: str | os.PathLike,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    flag: str = "--out",
    overwrite_flag: str | None = "--overwrite",
) -> Path:
    """:func:`check_output_dir`, then create the folder and mark it as ``command``'s; returns it."""
    out = check_output_dir(
        path, command, overwrite=overwrite, inputs=inputs, flag=flag, overwrite_flag=overwrite_flag
    )
    owner = written_by(out) if out.is_dir() else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        if owner is None or owner != command:
            (out / MARKER).write_text(json.dumps({"command": command}) + "\n")
    except OSError as err:
        raise ValueError(
            f"{flag} {out}: cannot be written ({err.strerror or err}); fix: a writable folder path."
        ) from None
    return out
