"""Calibration batches as pruning and quantization read them (one reader, one set of checks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def read_calibration(
    calibration: Iterable[Mapping[str, torch.Tensor]], device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """``(input_ids [B, T], attention_mask [B, T] or None, token mask bool [B, T])`` per batch, on
    ``device``. A 1-D ``input_ids`` is one row. Refuses a batch without integer ``input_ids``, a mask
    of another shape, and calibration without a single non-pad token."""
    batches = []
    for i, batch in enumerate(calibration):
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise ValueError(f"calibration batch {i} is not a dict with 'input_ids'")
        ids = torch.as_tensor(batch["input_ids"])
        ids = ids[None] if ids.dim() == 1 else ids
        if ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"calibration batch {i}: input_ids must be an integer tensor [B, T]")
        attn = batch.get("attention_mask")
        if attn is not None:
            attn = torch.as_tensor(attn)
            attn = attn[None] if attn.dim() == 1 else attn
            if attn.shape != ids.shape:
                raise ValueError(
                    f"calibration batch {i}: attention_mask {tuple(attn.shape)} != input_ids {tuple(ids.shape)}"
                )
            attn = attn.to(device)
        mask = attn.bool() if attn is not None else torch.ones(ids.shape, dtype=torch.bool, device=device)
        batches.append((ids.to(device), attn, mask))
    if not any(bool(m.any()) for _, _, m in batches):
        raise ValueError(
            f"calibration is empty: calibration has no non-pad token ({len(batches)} batches); fix: pass "
            "batches of 'input_ids' whose 'attention_mask' is 1 on real tokens"
        )
    return batches
