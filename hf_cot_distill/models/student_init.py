"""A student initialised from a subset of its teacher's decoder layers (layer dropping).

A shallow student that starts from the teacher's own weights learns far faster under KD than a
random one (DistilBERT's and "Scaling Down, Serving Fast"'s recipe: take every k-th layer,
then distil). :func:`init_student_from_teacher` builds it:

* the config is the teacher's with ``num_hidden_layers = len(layers)`` (and per-layer config
  lists such as ``layer_types`` cut to the kept layers);
* every weight outside the decoder stack (token embeddings, final norm, ``lm_head``, rotary
  buffers) is copied; decoder layer ``layers[j]`` of the teacher becomes layer ``j``;
* tied embeddings stay tied; the generation config is copied;
* with ``out_dir`` the student is saved with safetensors (plus the teacher's tokenizer when
  there is one), so a recipe's ``model_name_or_path`` can point at the folder.

With ``layers = range(teacher depth)`` the student *is* the teacher (same logits).
Decoder-only ``*ForCausalLM`` models whose decoder keeps its blocks in one ``ModuleList``
(``get_decoder().layers``: Llama, Qwen2, Mistral, ...) are supported.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from hf_cot_distill.core.validation import check_int, is_int
from hf_cot_distill.models.decoder import decoder_layers

#: SmolLM2-135M (30 layers) -> 4 layers: first, last and two evenly spaced between.
DEFAULT_LAYERS: tuple[int, ...] = (0, 10, 20, 29)
#: Config attributes holding one entry per decoder layer (cut to the kept layers).
PER_LAYER_CONFIG_LISTS: tuple[str, ...] = ("layer_types", "no_rope_layers", "sliding_window_pattern_list")


def _check_layers(layers: Sequence[int], depth: int) -> list[int]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(
            f"layers: got {layers!r}; fix: pass a list of teacher layer indices, e.g. [0, 10, 20, 29]."
        )
    picked = list(layers)
    if not picked:
        raise ValueError("layers: empty; fix: keep at least one teacher layer, e.g. [0, 10, 20, 29].")
    fix = f"the teacher has {depth} decoder layers: use indices in [0, {depth - 1}] (negative ones are not accepted)"
    for i, index in enumerate(picked):
        if not is_int(index):  # TypeError, not ValueError: tests/test_student_init.py relies on it
            raise TypeError(f"layers[{i}]={index!r}: must be an int; fix: pass integer layer indices.")
        picked[i] = check_int(f"layers[{i}]", index, minimum=0, maximum=depth - 1, fix=fix)
    if any(b <= a for a, b in zip(picked, picked[1:])):
        raise ValueError(
            f"layers: {picked} must be strictly increasing (no repeats, teacher order kept); "
            f"fix: e.g. {sorted(set(picked))}."
        )
    return picked


def _load_teacher(path: Path) -> PreTrainedModel:
    if not path.is_dir():
        raise FileNotFoundError(
            f"teacher_dir_or_model: {str(path)!r} is not a folder; fix: pass a safetensors model folder "
            "(e.g. from `hf-cot-distill convert-gguf`) or a loaded model."
        )
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder unless ``overwrite`` (shared by the model writers)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir: {str(out_dir)!r} is a file; fix: pass a folder path.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"out_dir: {str(out_dir)!r} is not empty; fix: pass an empty or new folder, or overwrite=True."
        )


def student_config(teacher_config: Any, layers: Sequence[int]) -> Any:
    """A copy of ``teacher_config`` with ``len(layers)`` decoder layers (per-layer lists cut)."""
    config = copy.deepcopy(teacher_config)
    depth = config.num_hidden_layers
    config.num_hidden_layers = len(layers)
    for name in PER_LAYER_CONFIG_LISTS:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and len(value) == depth:
            setattr(config, name, [value[i] for i in layers])
    return config


def init_student_from_teacher(
    teacher_dir_or_model: str | Path | PreTrainedModel,
    layers: Sequence[int] = DEFAULT_LAYERS,
    out_dir: str | Path | None = None,
    *,
    tokenizer: Any = None,
    overwrite: bool = False,
) -> PreTrainedModel:
    """Build a student from the teacher's embeddings, ``layers``, final norm and ``lm_head``.

    Args:
        teacher_dir_or_model: a safetensors model folder or a loaded ``*ForCausalLM``. It is not
            modified; the student's tensors are copies (same dtype).
        layers: teacher decoder layer indices to keep, strictly increasing, each in
            ``[0, depth)``; student layer ``j`` is teacher layer ``layers[j]``.
        out_dir: if given, save the student there (``model.safetensors``, ``config.json``,
            ``generation_config.json``) with the tokenizer: ``tokenizer``, or else the one in
            the teacher folder (when it has one). Must be empty unless ``overwrite``.
        tokenizer: a tokenizer to save beside the student (optional).
        overwrite: allow writing into a non-empty ``out_dir``.

    Returns:
        The student (eval mode, on CPU, the teacher's dtype).

    Raises:
        TypeError: ``layers`` is not a list of ints.
        ValueError: the model has no decoder block list; an index out of range, repeated or out
            of order; an empty ``layers``; a non-empty ``out_dir``.
        FileNotFoundError: ``teacher_dir_or_model`` is a path that is not a folder.
    """
    teacher_dir = None
    if isinstance(teacher_dir_or_model, (str, Path)):
        teacher_dir = Path(teacher_dir_or_model)
        teacher = _load_teacher(teacher_dir)
    elif isinstance(teacher_dir_or_model, PreTrainedModel):
        teacher = teacher_dir_or_model
    else:
        raise TypeError(
            f"teacher_dir_or_model: got {type(teacher_dir_or_model).__name__}; fix: pass a model folder path "
            "or a PreTrainedModel."
        )
    prefix, blocks = decoder_layers(teacher)
    picked = _check_layers(layers, len(blocks))
    if out_dir is not None:
        check_out_dir(Path(out_dir), overwrite)

    config = student_config(teacher.config, picked)
    dtype = next(teacher.parameters()).dtype
    student = AutoModelForCausalLM.from_config(config, dtype=dtype)
    new_index = {old: new for new, old in enumerate(picked)}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith(prefix + "."):
            index, rest = name[len(prefix) + 1 :].split(".", 1)
            if int(index) not in new_index:
                continue
            name = f"{prefix}.{new_index[int(index)]}.{rest}"
        state[name] = tensor.detach().clone()
    result = student.load_state_dict(state, strict=False)
    if result.unexpected_keys or [k for k in result.missing_keys if not _is_tied(student, k)]:
        raise ValueError(
            f"teacher: weights do not map onto the student (missing {result.missing_keys[:4]}, unexpected "
            f"{result.unexpected_keys[:4]}); fix: report this model type, it is not a plain decoder stack."
        )
    student.tie_weights()
    student.generation_config = copy.deepcopy(teacher.generation_config)
    student.eval()
    if out_dir is not None:
        out = Path(out_dir)
        student.save_pretrained(out, safe_serialization=True)
        tokenizer = tokenizer if tokenizer is not None else _folder_tokenizer(teacher_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    return student


def _is_tied(model: PreTrainedModel, key: str) -> bool:
    """``key`` is a weight re-tied to another on load (``lm_head.weight`` with tied embeddings)."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return key in tied


def _folder_tokenizer(folder: Path | None) -> Any:
    if folder is None or not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
