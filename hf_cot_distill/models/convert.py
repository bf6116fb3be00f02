"""GGUF -> safetensors: turn a llama.cpp checkpoint into a normal Hugging Face model folder.

``transformers`` loads GGUF files (``from_pretrained(folder, gguf_file=name)``, dequantised to
floats) but ``save_pretrained`` refuses such a model ("quantized with gguf and is not
serializable"). :func:`convert_gguf_to_safetensors` writes what ``save_pretrained`` would:

* ``model.safetensors`` (or shards + ``model.safetensors.index.json``) from the state dict. A
  weight tied to another (``lm_head.weight`` to ``model.embed_tokens.weight`` when
  ``tie_word_embeddings``) is written once, under the name the model re-ties on load;
* ``config.json`` without the GGUF ``quantization_config``, with the saved ``dtype``;
* ``generation_config.json``;
* the tokenizer the GGUF file carries (``tokenizer.json`` + ``tokenizer_config.json``).

The folder then reloads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and gives the same
logits. Nothing is pickled and no remote code is trusted. Reading GGUF needs the ``gguf``
package (``pip install 'hf-cot-distill[assets]'``), never a runtime dependency.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import torch

from hf_cot_distill.core.outputs import check_output_dir, claim_output_dir
from hf_cot_distill.core.validation import check_choice

GGUF_MAGIC = b"GGUF"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_GGUF_INSTALL_HINT = "install it with `pip install 'hf-cot-distill[assets]'` or `pip install gguf`"


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    return DTYPES[check_choice("dtype", dtype, sorted(DTYPES))]


def _check_gguf_file(gguf_path: Path) -> None:
    if not gguf_path.exists():
        raise FileNotFoundError(
            f"gguf_path: {str(gguf_path)!r} does not exist; fix: pass the path of a .gguf file."
        )
    if not gguf_path.is_file():
        raise ValueError(
            f"gguf_path: {str(gguf_path)!r} is not a file; fix: pass the .gguf file, not its folder."
        )
    with gguf_path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"gguf_path: {str(gguf_path)!r} does not start with the GGUF magic {GGUF_MAGIC!r} (got {magic!r}); "
            "fix: pass a llama.cpp GGUF file."
        )


# What the GGUF readers (gguf's and transformers') raise on a file cut short or garbled.
_CORRUPT_GGUF_ERRORS = (struct.error, EOFError, IndexError, ValueError, OverflowError, UnicodeDecodeError)


def _check_gguf_complete(gguf_path: Path) -> None:
    """Read the header, tensor table and tensor extents (memory-mapped, no data is copied): a file
    cut short by an interrupted download fails here, not inside transformers."""
    from gguf import GGUFReader

    try:
        GGUFReader(gguf_path)
    except _CORRUPT_GGUF_ERRORS as err:
        raise ValueError(_corrupt_gguf_message(gguf_path, f"gguf cannot read it: {err}")) from err


def _corrupt_gguf_message(gguf_path: Path, why: str) -> str:
    return (
        f"gguf_path: {str(gguf_path)!r} is a truncated or corrupt GGUF file ({why}); "
        "fix: download it again (an interrupted download leaves a short file) and compare its size with the source."
    )


def untie_state_dict(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """The model's tensors ready for safetensors, and whether the embeddings stay tied.

    safetensors refuses tensors that share memory. A tied output projection (the model's
    ``all_tied_weights_keys``, e.g. ``lm_head.weight`` -> ``model.embed_tokens.weight``) is
    dropped when it is the same tensor as, or equal to, its source: ``from_pretrained`` re-ties
    it. Any other shared tensor is copied. Returns ``(tensors, tied)``; ``tied`` is ``False`` when
    the config claims tied embeddings but the loaded weights differ (the config must then say so).
    """
    state = model.state_dict()
    tied_map: dict[str, str] = dict(getattr(model, "all_tied_weights_keys", None) or {})
    text_config = model.config.get_text_config()
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    tensors: dict[str, torch.Tensor] = {}
    for target, source in tied_map.items():
        if target in state and source in state:
            same = state[target].data_ptr() == state[source].data_ptr() or torch.equal(
                state[target], state[source]
            )
            if tied and same:
                state.pop(target)
            elif tied:
                tied = False
    seen: set[int] = set()
    for name, tensor in state.items():
        ptr = tensor.data_ptr()
        tensors[name] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        seen.add(ptr)
    return tensors, tied


def _save_weights(tensors: dict[str, torch.Tensor], out_dir: Path, max_shard_size: int | str) -> list[str]:
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    for filename, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {**split.metadata}, "weight_map": split.tensor_to_filename}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return sorted(split.filename_to_tensors)


def convert_gguf_to_safetensors(
    gguf_path: str | Path,
    out_dir: str | Path,
    dtype: str | torch.dtype = "float32",
    *,
    save_tokenizer: bool = True,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Convert a GGUF causal-LM checkpoint into a safetensors model folder.

    Args:
        gguf_path: the ``.gguf`` file (quantised or not; it is dequantised on load).
        out_dir: folder to write; created if missing; must be empty unless ``overwrite``.
        dtype: dtype of the saved weights, one of :data:`DTYPES` (names or ``torch`` dtypes).
        save_tokenizer: also write the tokenizer that the GGUF file carries.
        max_shard_size: split the weights into shards above this size (``"5GB"``, bytes).
        overwrite: allow writing into a non-empty ``out_dir``.

    Returns:
        ``out_dir``, which ``AutoModelForCausalLM.from_pretrained`` (and ``AutoTokenizer``) load.

    Raises:
        FileNotFoundError: ``gguf_path`` does not exist.
        ValueError: not a GGUF file, a truncated or corrupt one, bad ``dtype``, or a non-empty
            ``out_dir``.
        ImportError: the ``gguf`` package is missing (the message says how to install it).
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    torch_dtype = _resolve_dtype(dtype)
    _check_gguf_file(gguf_path)
    check_output_dir(out_dir, "convert-gguf", overwrite=overwrite, inputs=[gguf_path])
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Reading GGUF files needs the `gguf` package; {_GGUF_INSTALL_HINT}.")
    _check_gguf_complete(gguf_path)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    except (struct.error, EOFError) as err:  # a file the header check passed but transformers cannot read
        raise ValueError(_corrupt_gguf_message(gguf_path, str(err))) from err
    model = model.to(torch_dtype).eval()
    tensors, tied = untie_state_dict(model)

    claim_output_dir(out_dir, "convert-gguf", overwrite=overwrite, inputs=[gguf_path])
    _save_weights(tensors, out_dir, max_shard_size)
    _config_for_safetensors(model.config, torch_dtype, tied).save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    if save_tokenizer:
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out_dir)
    return out_dir


def _config_for_safetensors(config: Any, dtype: torch.dtype, tied: bool) -> Any:
    """A copy of ``config`` without the GGUF quantisation entry, with the saved dtype and tying."""
    config = config.__class__.from_dict(config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    text_config = config.get_text_config()
    if getattr(text_config, "tie_word_embeddings", False) and not tied:
        text_config.tie_word_embeddings = False
    return config
