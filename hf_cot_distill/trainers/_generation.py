"""Completions for ``on_policy`` (student samples) and ``sequence_level`` (teacher generates) KD.

The prompt of a row is everything up to and including its last ``PROMPT`` token (for a chat
trace: the question and the assistant header; for a CoT-ICL row: the context examples and the
last example's inputs). The generated completion replaces the rest of the row; its tokens
count as ``generated_section`` for the supervision policy (generated text carries no section
markers we would trust). Generation uses a KV cache: prompts are left-padded with an
``attention_mask`` (never packed), so the cache cannot leak across samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hf_cot_distill.core.sections import Section
from hf_cot_distill.core.validation import is_int
from hf_cot_distill.supervision.policy import IGNORE_INDEX, SupervisionPolicy


def split_prompts(batch: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Per row: ``(prompt_ids (P,), prompt_section_ids (P,))`` long, padding removed."""
    ids, secs = batch["input_ids"], batch["section_ids"]
    mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
    out = []
    for b in range(ids.shape[0]):
        row_ids, row_secs = ids[b][mask[b]], secs[b][mask[b]]
        prompt_pos = torch.nonzero(row_secs == int(Section.PROMPT)).flatten()
        if prompt_pos.numel() == 0:
            raise ValueError(
                f"batch row {b}: no PROMPT token, nothing to generate from; fix: on_policy / sequence_level KD "
                "needs rows with a prompt section (or use kd_mode='supervised')."
            )
        end = int(prompt_pos[-1]) + 1
        out.append((row_ids[:end], row_secs[:end]))
    return out


@torch.no_grad()
def generate_completions(
    model: Any,
    prompts: list[Tensor],
    *,
    pad_token_id: int,
    eos_token_id: int | list[int] | None,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
) -> list[Tensor]:
    """Left-pad ``prompts``, generate, and return each completion (cut after its first eos)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = p.to(device)
        mask[b, width - len(p) :] = 1
    sampling = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {}
    seqs = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        min_new_tokens=1,
        do_sample=do_sample,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        use_cache=True,
        **sampling,
    )
    completions = seqs[:, width:]
    eos = [] if eos_token_id is None else [eos_token_id] if is_int(eos_token_id) else list(eos_token_id)
    out = []
    for row in completions:
        hit = (
            torch.nonzero(torch.isin(row, torch.tensor(eos, device=row.device))).flatten() if eos else row[:0]
        )
        out.append(row[: int(hit[0]) + 1] if hit.numel() else row)
    return out


def build_generated_batch(
    prompts: list[tuple[Tensor, Tensor]],
    completions: list[Tensor],
    *,
    policy: SupervisionPolicy,
    generated_section: Section,
    ce_on_generated: bool,
    pad_token_id: int,
) -> dict[str, Tensor]:
    """Right-padded batch (same keys as the padded ``SectionCollator`` output) of prompt + completion.

    Weights come from ``policy`` on the section ids; generated tokens take ``generated_section``;
    with ``ce_on_generated=False`` (on-policy: CE on the student's own samples would only
    reinforce them) the generated positions get no CE. The first token is never a target.
    """
    rows = []
    for (p_ids, p_secs), comp in zip(prompts, completions):
        comp = comp.to(p_ids.device)
        ids = torch.cat([p_ids, comp])
        secs = torch.cat([p_secs, torch.full_like(comp, int(generated_section))])
        ce = policy.ce_weights(secs).float()
        kd = policy.kd_weights(secs).float()
        if not ce_on_generated:
            ce[len(p_ids) :] = 0.0
        ce[0], kd[0] = 0.0, 0.0
        labels = torch.where(ce > 0, ids, torch.full_like(ids, IGNORE_INDEX))
        rows.append(
            {"input_ids": ids, "labels": labels, "section_ids": secs, "ce_weights": ce, "kd_weights": kd}
        )
    width = max(len(r["input_ids"]) for r in rows)
    pads = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "section_ids": int(Section.PAD)}
    batch: dict[str, Tensor] = {}
    for key in rows[0]:
        sample = rows[0][key]
        out = torch.full((len(rows), width), pads.get(key, 0), dtype=sample.dtype, device=sample.device)
        for b, r in enumerate(rows):
            out[b, : len(r[key])] = r[key]
        batch[key] = out
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=batch["input_ids"].device)
    for b, r in enumerate(rows):
        mask[b, : len(r["input_ids"])] = 1
    batch["attention_mask"] = mask
    return batch
