"""Per-section loss statistics of the KD trainer, accumulated between two log calls.

Values are kept as sums and counts (float64 / int64 numpy) so the logged means are exact
over micro-batches (and ranks, once summed): ``ce/<section>`` is the mean token CE and
``kd/<section>`` the mean *unweighted* divergence over the positions of that section that
carry a CE / KD weight (the fused loss returns weighted sums; sections have one weight each,
so dividing by it recovers the plain mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from hf_cot_distill.core.sections import NUM_SECTIONS, SECTION_NAMES, Section

_REPORTED = (Section.PROMPT, Section.COT, Section.ANSWER)


def _zeros(dtype: type) -> np.ndarray:
    return np.zeros(NUM_SECTIONS, dtype=dtype)


@dataclass
class SectionLossStats:
    """Sums and counts per section id: ``kd_sum`` / ``ce_sum`` are *unweighted* loss sums."""

    kd_sum: np.ndarray = field(default_factory=lambda: _zeros(np.float64))
    kd_count: np.ndarray = field(default_factory=lambda: _zeros(np.int64))
    ce_sum: np.ndarray = field(default_factory=lambda: _zeros(np.float64))
    ce_count: np.ndarray = field(default_factory=lambda: _zeros(np.int64))

    def add(
        self,
        section_kd_sum: Tensor,
        section_kd_count: Tensor,
        section_ce_sum: Tensor,
        section_ce_count: Tensor,
        kd_section_weights: np.ndarray,
        ce_section_weights: np.ndarray,
    ) -> None:
        """Add one micro-batch's ``(4,)`` fused-loss statistics (weighted sums -> unweighted)."""

        def unweight(total: Tensor, weights: np.ndarray) -> np.ndarray:
            t = total.detach().double().cpu().numpy()
            return np.divide(t, weights, out=np.zeros_like(t), where=weights > 0)

        self.kd_sum += unweight(section_kd_sum, kd_section_weights)
        self.kd_count += section_kd_count.detach().cpu().numpy().astype(np.int64)
        self.ce_sum += unweight(section_ce_sum, ce_section_weights)
        self.ce_count += section_ce_count.detach().cpu().numpy().astype(np.int64)

    def means(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}kd/<section>`` and ``{prefix}ce/<section>`` for sections with a count > 0."""
        out: dict[str, float] = {}
        for kind, sums, counts in (("kd", self.kd_sum, self.kd_count), ("ce", self.ce_sum, self.ce_count)):
            for s in _REPORTED:
                if counts[s] > 0:
                    out[f"{prefix}{kind}/{SECTION_NAMES[int(s)]}"] = float(sums[s] / counts[s])
        return out

    def as_array(self) -> np.ndarray:
        """``(4, NUM_SECTIONS)`` float64 (for an all-reduce across ranks)."""
        return np.stack([self.kd_sum, self.kd_count, self.ce_sum, self.ce_count]).astype(np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> SectionLossStats:
        return cls(a[0].copy(), a[1].astype(np.int64), a[2].copy(), a[3].astype(np.int64))
