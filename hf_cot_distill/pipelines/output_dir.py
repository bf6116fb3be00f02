"""Where a training run writes: a missing or empty ``output_dir``, a resumed one, or one the user
asked to clear (``--overwrite_output_dir true``) — never another run's folder silently. What is
refused whatever the flags (a file, the cwd, home, an input's folder) is the one rule of
:mod:`hf_cot_distill.core.outputs`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from hf_cot_distill.core.outputs import check_output_location, contents
from hf_cot_distill.trainers.kd_config import SectionKDConfig


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
        "teacher_cache": kd_args.teacher_cache,
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
    # Refused whatever the flags: a file, the cwd / home / root, a folder inside (or holding) an input.
    check_output_location(out, command, inputs=inputs, flag="output_dir")
    check_resume_checkpoint(kd_args)
    if overwrite and resuming:
        raise ValueError(
            f"--overwrite_output_dir true would delete the checkpoints resume_from_checkpoint="
            f"{kd_args.resume_from_checkpoint!r} resumes from; fix: drop one of the two."
        )
    if not out.is_dir() or not any(out.iterdir()) or resuming:
        return
    if not overwrite:
        raise ValueError(
            f"output_dir {out} is not empty ({contents(out)}): a new run there would mix its "
            f"files with the old ones; fix: choose another --output_dir, delete the folder, resume with "
            f"--resume_from_checkpoint CHECKPOINT, or pass --overwrite_output_dir true to `hf-cot-distill "
            f"{command}` to delete its contents first."
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
