"""Model and tokenizer loading: safetensors only, one error message per failure.

Every command (train, the teacher, compress, eval) loads models through :func:`load_causal_lm`:
``use_safetensors=True`` always (unpickling a ``pytorch_model.bin`` can run arbitrary code), and a
failure is a ``ValueError`` naming the field and the fix instead of a transformers traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, PreTrainedModel

#: Weight files that unpickle on load: never read, never published.
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Files that make a folder a tokenizer folder (a CoT-ICL model folder trains on token ids: none).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
)


def hub_offline() -> bool:
    """Whether the Hub is off (``HF_HUB_OFFLINE=1``): every name must then be a local folder."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def looks_like_a_path(name: str) -> bool:
    """A name that can only mean a local path: ``./x``, ``../x``, ``/x``, ``~/x``, a backslash,
    or more than one ``/`` (a Hub id is ``name`` or ``namespace/name``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def check_source(name: str | None, field: str) -> None:
    """Refuse, before anything loads or waits on Hub retries, a model/tokenizer/dataset ``name``
    that is neither a local path nor usable as a Hub id: a path-like name that does not exist,
    or any missing local name when the Hub is off. One ``ValueError`` naming field and fix."""
    if not name or Path(name).exists() or str(name).startswith("generator:"):
        return
    here = f"nothing at {Path(name).absolute()}"
    if looks_like_a_path(str(name)):
        raise ValueError(f"{field}={name!r}: not a local path ({here}); fix: the path of an existing folder.")
    if hub_offline():
        raise ValueError(
            f"{field}={name!r}: not a local folder ({here}), and the Hub is off (HF_HUB_OFFLINE=1), so it cannot be a "
            "Hub id either; fix: the path of an existing folder, or go online (HF_HUB_OFFLINE=0) for a Hub id."
        )


def has_tokenizer_files(folder: str | Path) -> bool:
    """Whether ``folder`` holds any of :data:`TOKENIZER_FILES`."""
    return any((Path(folder) / f).is_file() for f in TOKENIZER_FILES)


def model_load_error(field: str, path: str, err: BaseException) -> ValueError:
    """Why ``from_pretrained(path, use_safetensors=True)`` failed, naming ``field`` and the fix.

    A folder with pickle weights only (``pytorch_model.bin``…) is named with its files and how
    to convert them; a path that is no folder is "not a local folder, and the Hub could not
    provide it" (saying so when offline mode is on).
    """
    from huggingface_hub import constants

    folder = Path(path)
    if folder.is_dir():
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
        if pickles and not any(f.endswith(".safetensors") for f in files):
            return ValueError(
                f"{field}={path!r}: the folder holds pickle weights only ({', '.join(pickles)}); "
                "hf-cot-distill loads safetensors only (unpickling can run arbitrary code). Fix: if you "
                'trust the file, convert it once: python -c "from transformers import AutoModelForCausalLM '
                f'as M; M.from_pretrained({path!r}, use_safetensors=False).save_pretrained({path!r})" '
                f"(writes model.safetensors), then delete {', '.join(pickles)}."
            )
        return ValueError(
            f"{field}={path!r}: could not load a safetensors model from this folder ({err}); fix: point it "
            "at a folder written by save_pretrained (config.json + *.safetensors)."
        )
    offline = " (offline mode: HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
    return ValueError(
        f"{field}={path!r}: not a local folder (nothing at {folder.absolute()}), and the Hub could not "
        f"provide it{offline}: {err}; fix: pass an existing model folder, or go online for a Hub model id."
    )


def load_causal_lm(path: str, field: str, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)``: never a
    pickle; a failure is a ``ValueError`` naming ``field`` (see :func:`model_load_error`)."""
    from huggingface_hub.errors import HFValidationError

    try:
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    except (OSError, HFValidationError) as err:
        raise model_load_error(field, path, err) from err
