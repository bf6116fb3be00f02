"""Writing and loading quantized checkpoints in the compressed-tensors format.

The checkpoint is an ordinary Hugging Face model folder (``config.json``, ``generation_config.json``,
``model*.safetensors``) whose ``config.json`` carries a ``quantization_config`` with
``quant_method: compressed-tensors`` and ``format: pack-quantized``. Every quantized ``nn.Linear``
named ``N`` is stored as

- ``N.weight_packed``: int32 ``[out, ceil(in * bits / 32)]``, the signed integer codes
  ``q in [-2^(b-1), 2^(b-1) - 1]`` packed densely by ``compressed_tensors``' ``pack_to_int32``
  (8 codes per word at 4 bits, 4 at 8 bits);
- ``N.weight_scale``: ``[out, in / group_size]`` (``[out, 1]`` per output channel), in the weight dtype;
- ``N.weight_shape``: int64 ``[2]`` = ``(out, in)``;
- ``N.weight_zero_point`` (asymmetric only): the int codes of the zero points ``[out, n_groups]``
  packed along dim 0, int32 ``[ceil(out * bits / 32), n_groups]``;

and dequantizes to ``W = (q - zero) * scale`` (per group of ``group_size`` input columns). The other
tensors (embeddings, norms, biases, ``lm_head``) stay in the model dtype. Transformers' own
``CompressedTensorsHfQuantizer`` loads the folder, on CPU too:
``AutoModelForCausalLM.from_pretrained(path)`` needs no extra argument (see :func:`load_quantized`).

Asymmetric checkpoints carry ``"dequantize": true`` in their ``quantization_config``: in
compressed-tensors 0.20 the compressed (default) load path allocates the zero point unpacked
(``[out, n_groups]``) while the format stores it packed, so loading fails with a size mismatch;
``dequantize=True`` takes transformers' other route, which decompresses every weight while loading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["PackedWeight", "load_quantized", "quantization_config_dict", "write_checkpoint"]


class PackedWeight(Protocol):
    """The integer form of one linear weight, as written here (``quantize.QuantizedWeight``)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    symmetric: bool


FORMAT = "pack-quantized"
REPORT_FILE = "quantization_report.json"


def _require_compressed_tensors() -> None:
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the dev and compress extras install it
        raise ImportError(
            "saving quantized checkpoints needs compressed-tensors: "
            "pip install 'hf-cot-distill[compress]' (compressed-tensors>=0.20,<0.21)"
        ) from exc


def quantization_config_dict(
    bits: int, group_size: int | None, symmetric: bool, act_order: bool, ignore: list[str]
) -> dict[str, Any]:
    """The ``quantization_config`` entry of ``config.json`` for int weight-only quantization.

    ``ignore`` lists the full names of the ``nn.Linear`` modules left in full precision; every other
    ``Linear`` is quantized with ``bits``-bit int weights, one scale per ``group_size`` input columns
    (``None``: per output channel). ``act_order`` is recorded as ``actorder: weight`` (columns were
    processed in activation order during calibration; the groups stay contiguous, so no ``g_idx``).
    """
    _require_compressed_tensors()
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=bits,
        type="int",
        symmetric=symmetric,
        strategy="group" if group_size else "channel",
        group_size=group_size,
        actorder="weight" if act_order else None,
    )
    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=sorted(ignore),
        format=FORMAT,
        quantization_status="compressed",
    )
    out: dict[str, Any] = {"quant_method": "compressed-tensors", "version": compressed_tensors.__version__}
    out.update(config.model_dump())
    if not symmetric:
        # compressed-tensors 0.20's compressed load path cannot take a packed zero point (module docstring).
        out["dequantize"] = True
    return out


def _packed_tensors(name: str, record: PackedWeight) -> dict[str, torch.Tensor]:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    q = record.q.to(torch.int8).contiguous()
    tensors = {
        f"{name}.weight_packed": pack_to_int32(q, record.bits),
        f"{name}.weight_scale": record.scale.contiguous(),
        f"{name}.weight_shape": torch.tensor(list(q.shape), dtype=torch.int64),
    }
    if not record.symmetric:
        zero = record.zero.to(torch.int8).contiguous()
        tensors[f"{name}.weight_zero_point"] = pack_to_int32(zero, record.bits, packed_dim=0).contiguous()
    return tensors


def write_checkpoint(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    records: Mapping[str, PackedWeight],
    act_order: bool = False,
    report: dict[str, Any] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write ``model`` with the ``records`` linears packed (see the module docstring); returns the folder.

    ``records`` maps full module names to their integer codes; all must share bits, group size and
    symmetry. The remaining state dict is saved as is by ``model.save_pretrained`` (safetensors,
    tied weights once). ``report`` (JSON-able) is written next to it as ``quantization_report.json``.
    """
    _require_compressed_tensors()
    if not records:
        raise ValueError("nothing to save: no quantized linear layers were given")
    kinds = {(r.bits, r.group_size, r.symmetric) for r in records.values()}
    if len(kinds) != 1:
        raise ValueError(
            f"all quantized layers must share (bits, group_size, symmetric); got {sorted(kinds)}"
        )
    (bits, group_size, symmetric) = kinds.pop()

    state = dict(model.state_dict())
    for name, record in records.items():
        if f"{name}.weight" not in state:
            raise ValueError(f"quantized layer {name!r} is not a module of the model being saved")
        del state[f"{name}.weight"]
        state.update(_packed_tensors(name, record))
    ignore = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in records
    ]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = quantization_config_dict(bits, group_size, symmetric, act_order, ignore)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if report is not None:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    stray = sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if stray:
        raise RuntimeError(f"{out} holds non-safetensors weight files {stray}; save into an empty folder")
    return out


def load_quantized(path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Load a checkpoint written by ``save_quantized``: ``AutoModelForCausalLM.from_pretrained(path)``.

    No extra argument is needed, on CPU included: transformers' compressed-tensors quantizer builds
    the packed layout and loads the int32 codes (the checkpoint stays ~bits/32 of the fp32 size on
    disk). Left alone, it decompresses the weights on the first forward (the linears have no
    ``.weight`` before); here they are decompressed at once, to the checkpoint dtype, so the
    returned model (eval mode) is ready to inspect, evaluate or fine-tune, and computes exactly what
    the in-memory fake-quantized model of ``quantize_model`` computes. Asymmetric checkpoints are
    dequantized while loading (see the module docstring). ``kwargs`` go to ``from_pretrained``
    (e.g. ``device_map``; ``quantization_config=CompressedTensorsConfig(dequantize=True)`` gives a
    plain dense model without the compressed-tensors module state).
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if getattr(model, "ct_decompress_hook", None) is not None and quantizer is not None:
        quantizer.compressor.decompress_model(model)  # what the first forward's hook would do
    return model.eval()
