"""Token / FLOP / peak-memory accounting for the KD trainer (what the trade-off curves need).

Counted FLOPs (multiply-adds count 2), per training micro-batch::

    student  = 6 * P_s * T_fwd  +  6 * V * H_s * n_head
    teacher  = 2 * P_t * T_fwd  +  2 * V * H_t * n_kd

* ``P_s`` / ``P_t``: parameters of the student / teacher *body* (the decoder stack), without
  the input embedding table (a lookup, no FLOPs) and without the lm_head (counted apart);
* ``T_fwd``: tokens forwarded (non-padding positions of the batch);
* ``n_head``: positions where the student lm_head runs (KD or CE weight > 0): the fused loss
  skips the others, so at the Qwen2.5 vocabulary (151,936) the head term follows the
  supervision, not the sequence length;
* ``n_kd``: positions where the teacher lm_head runs (KD weight > 0);
* 6 = forward (2) + backward (4) for the student, 2 = forward only for the teacher (frozen).

Attention's ``T^2`` term is left out (it is small next to the weights for the short, narrow
models we count here; say so when comparing with other counters). Without a teacher the
teacher terms are 0. LoRA students: the backward through frozen weights still costs ~4·P·T
(activation gradients), so the formula is kept as is — an upper bound on the work.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hf_cot_distill.core.sections import NUM_SECTIONS, SECTION_NAMES, Section


def body_parameter_count(model: nn.Module) -> int:
    """Parameters of the decoder body: all parameters minus input embeddings and lm_head.

    Tied embeddings are counted once (as the lm_head, i.e. excluded here). Works on
    ``PreTrainedModel`` and PEFT-wrapped models (LoRA parameters count).
    """
    skip: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            skip.update(id(p) for p in module.parameters())
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in skip or id(p) in seen:
            continue
        seen.add(id(p))
        total += int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 keeps the full size in ds_numel
    return total


def kd_step_flops(
    *,
    student_body_params: int,
    student_hidden: int,
    vocab_size: int,
    tokens_forwarded: int,
    head_positions: int,
    teacher_body_params: int = 0,
    teacher_hidden: int = 0,
    kd_positions: int = 0,
) -> tuple[int, int]:
    """``(student_flops, teacher_flops)`` of one micro-batch, by the formula in the module docstring."""
    student = 6 * student_body_params * tokens_forwarded + 6 * vocab_size * student_hidden * head_positions
    teacher = 0
    if teacher_body_params:
        teacher = 2 * teacher_body_params * tokens_forwarded + 2 * vocab_size * teacher_hidden * kd_positions
    return student, teacher


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak memory so far: CUDA max allocated on a CUDA device, else the process's peak RSS."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _zeros() -> np.ndarray:
    return np.zeros(NUM_SECTIONS, dtype=np.int64)


@dataclass
class ComputeAccounting:
    """Running totals over training: tokens per section, counted FLOPs, peak memory.

    ``kd_tokens`` / ``ce_tokens``: ``(NUM_SECTIONS,)`` int64 positions trained with KD / CE
    per section of the *predicted* token; ``tokens_forwarded``: non-padding tokens through the
    student; ``student_flops`` / ``teacher_flops``: see the module docstring.
    """

    tokens_forwarded: int = 0
    kd_tokens: np.ndarray = field(default_factory=_zeros)
    ce_tokens: np.ndarray = field(default_factory=_zeros)
    student_flops: int = 0
    teacher_flops: int = 0
    peak_memory: int = 0

    @property
    def total_flops(self) -> int:
        return self.student_flops + self.teacher_flops

    def add(
        self,
        *,
        tokens_forwarded: int,
        kd_tokens: np.ndarray,
        ce_tokens: np.ndarray,
        student_flops: int,
        teacher_flops: int,
    ) -> None:
        """Add one micro-batch."""
        self.tokens_forwarded += int(tokens_forwarded)
        self.kd_tokens = self.kd_tokens + np.asarray(kd_tokens, dtype=np.int64)
        self.ce_tokens = self.ce_tokens + np.asarray(ce_tokens, dtype=np.int64)
        self.student_flops += int(student_flops)
        self.teacher_flops += int(teacher_flops)

    def update_peak_memory(self, device: torch.device | str | None = None) -> int:
        """Refresh and return ``peak_memory`` (bytes)."""
        self.peak_memory = max(self.peak_memory, peak_memory_bytes(device))
        return self.peak_memory

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for a logger (``tokens_kd/cot``, ``flops_counted``, ``peak_memory_mb`` ...)."""
        out: dict[str, float] = {"tokens_forwarded": self.tokens_forwarded}
        for s in (Section.PROMPT, Section.COT, Section.ANSWER):
            out[f"tokens_kd/{SECTION_NAMES[int(s)]}"] = int(self.kd_tokens[s])
            out[f"tokens_ce/{SECTION_NAMES[int(s)]}"] = int(self.ce_tokens[s])
        out.update(
            flops_counted=float(self.total_flops),
            flops_student=float(self.student_flops),
            flops_teacher=float(self.teacher_flops),
            peak_memory_mb=self.peak_memory / 2**20,
        )
        return out
