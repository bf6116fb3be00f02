"""Where a training run writes: a missing or empty ``output_dir``, a resumed one, or one the user
asked to clear (``--overwrite_output_dir true``) — never another run's folder silently."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from hf_cot_distill.trainers.kd_config import SectionKDConfig


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def run_inputs(
    recipe: str | None, model_args: Any, data_args: Any, kd_args: SectionKDConfig
) -> dict[str, str | None]:
    """The local inputs of a run (field -> path), which must never lie inside a folder it clears."""
    dataset = data_args.dataset_name or ""
    return {
        "recipe": recipe,
        "model_name_or_path": model_args.model_name_or_path,
        "tokenizer_name_or_path": model_args.tokenizer_name_or_path,
        "teacher_model_name_or_path": kd_args.teacher_model_name_or_path,
        "dataset_name": dataset.removeprefix("generator:") or None,
    }


def check_resume_checkpoint(kd_args: SectionKDConfig) -> None:
    """``resume_from_checkpoint``: a folder that exists (or ``true``: output_dir holds a checkpoint),
    checked before any model loads or file is written."""
    target = kd_args.resume_from_checkpoint
    if not target:
        return
    if target is True:
        from transformers.trainer_utils import get_last_checkpoint

        out = Path(kd_args.output_dir)
        if not out.is_dir() or get_last_checkpoint(str(out)) is None:
            raise ValueError(
                f"resume_from_checkpoint=true: output_dir {out} holds no checkpoint-* folder to resume from; fix: "
                "point resume_from_checkpoint at a checkpoint folder, or drop it to start a new run."
            )
        return
    folder = Path(str(target))
    if not folder.is_dir():
        where = "is a file" if folder.exists() else "does not exist"
        raise ValueError(
            f"resume_from_checkpoint={str(target)!r} {where}; fix: a checkpoint-N folder written by a run with "
            "save_strategy steps or epoch (e.g. OUTPUT_DIR/checkpoint-500), or true for the latest in output_dir."
        )


def check_output_dir(
    kd_args: SectionKDConfig, overwrite: bool, inputs: dict[str, str | None], command: str
) -> None:
    """Refuse to write a run into a non-empty ``output_dir`` (its old files would sit beside the new
    ones, e.g. another run's ``checkpoint-*/``), unless the run resumes from a checkpoint there or
    ``overwrite`` (``--overwrite_output_dir true``) asks to delete its contents first. ``inputs``:
    the run's local inputs (:func:`run_inputs`), which must not lie inside a folder that is cleared.
    Raises ``ValueError`` naming the folder and the fix."""
    out = Path(kd_args.output_dir)
    resuming = bool(kd_args.resume_from_checkpoint)  # SectionKDConfig made "true"/"false" True/None
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file; fix: give output_dir a folder (missing or empty).")
    check_resume_checkpoint(kd_args)
    if overwrite and resuming:
        raise ValueError(
            f"--overwrite_output_dir true would delete the checkpoints resume_from_checkpoint="
            f"{kd_args.resume_from_checkpoint!r} resumes from; fix: drop one of the two."
        )
    if not out.is_dir() or not any(out.iterdir()) or resuming:
        return
    if not overwrite:
        shown = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise ValueError(
            f"output_dir {out} is not empty ({', '.join(shown[:5])}{more}): a new run there would mix its "
            f"files with the old ones; fix: choose another --output_dir, delete the folder, resume with "
            f"--resume_from_checkpoint CHECKPOINT, or pass --overwrite_output_dir true to `hf-cot-distill "
            f"{command}` to delete its contents first."
        )
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or _inside(cwd, resolved):
        raise ValueError(
            f"--overwrite_output_dir true: refusing to delete the contents of {out} (the current folder, "
            "one of its parents, or the home folder); fix: choose a dedicated --output_dir."
        )
    for name, path in inputs.items():
        if path and Path(path).exists() and _inside(Path(path).resolve(), resolved):
            raise ValueError(
                f"--overwrite_output_dir true would delete {name}={path}, which lies in output_dir {out}; "
                "fix: choose another --output_dir."
            )
    if kd_args.process_index == 0:  # one process deletes; the others wait (main_process_first)
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        print(f"--overwrite_output_dir: deleted the contents of {out}", file=sys.stderr)


def prepare_output_dir(
    kd_args: SectionKDConfig, overwrite: bool, inputs: dict[str, str | None], command: str
) -> None:
    """:func:`check_output_dir` with the main process first (it deletes, when asked), so every
    process of a distributed run sees the same folder."""
    with kd_args.main_process_first(local=False, desc="output_dir check"):
        check_output_dir(kd_args, overwrite, inputs, command)
