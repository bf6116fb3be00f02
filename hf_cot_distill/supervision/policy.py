"""Supervision allocation by section (Distilling the Essence): which tokens get CE and/or KD.

A :class:`SupervisionPolicy` says, per section (PROMPT, COT, ANSWER), the cross-entropy
weight, the KD weight and optionally a per-section KD temperature. ``PAD`` is never
supervised. It turns per-token section ids into:

* ``labels``: ``input_ids`` where the CE weight is > 0, else ``-100`` (the ignore index);
* ``ce_weights`` / ``kd_weights``: ``float32`` per-token weights (0 = not supervised);
* ``kd_temperatures``: ``float32`` per-token temperatures (``default`` where unset).

All outputs are aligned to the **input tokens** (unshifted, the transformers convention):
position ``t`` describes the target token ``input_ids[t]``, predicted from the logits at
``t - 1``; the loss shifts. Numpy arrays in give numpy arrays out, torch tensors give tensors
(same device).

The paper's six allocations are the presets in ``SUPERVISION_PRESETS``; it trains
``0.5·CE + 0.5·KD`` on the selected sections, so :meth:`SupervisionPolicy.from_preset`
defaults to CE weight 0.5 and KD weight 0.5 on the same sections (pass ``ce_sections`` to put
CE elsewhere, e.g. ``"answer"``, or ``ce_weight=0`` for pure KD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES, NUM_SECTIONS, SECTION_NAMES, Section
from hf_cot_distill.core.validation import check_choice, check_float

IGNORE_INDEX = -100
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

SUPERVISION_PRESETS: dict[str, tuple[Section, ...]] = {
    "prompt+cot+answer": (Section.PROMPT, Section.COT, Section.ANSWER),
    "cot+answer": (Section.COT, Section.ANSWER),
    "answer": (Section.ANSWER,),
    "prompt+answer": (Section.PROMPT, Section.ANSWER),
    "cot": (Section.COT,),
    "prompt+cot": (Section.PROMPT, Section.COT),
}


@dataclass(frozen=True)
class SectionSupervision:
    """Supervision of one section: CE weight, KD weight, optional KD temperature (None = default)."""

    ce_weight: float = 0.0
    kd_weight: float = 0.0
    kd_temperature: float | None = None

    def __post_init__(self) -> None:
        for name in ("ce_weight", "kd_weight"):
            check_float(name, getattr(self, name), minimum=0.0, fix="e.g. 0.5")
        if self.kd_temperature is not None:  # None: the trainer's default temperature
            check_float(
                "kd_temperature", self.kd_temperature, minimum=0.0, min_open=True, fix="e.g. 1.0, or None"
            )


_NONE = SectionSupervision()


def _bad_section_ids(detail: str) -> ValueError:
    return ValueError(
        f"section_ids: {detail}; fix: integer ids 0..{NUM_SECTIONS - 1} "
        f"({', '.join(f'{i} = {n}' for i, n in SECTION_NAMES.items())}), i.e. hf_cot_distill.core.sections.Section."
    )


def _lookup(table: np.ndarray, section_ids: ArrayT) -> ArrayT:
    """``table[section_ids]``, refusing ids that are not integers in ``0..NUM_SECTIONS - 1``
    (a negative id would silently wrap to another section's weights)."""
    if isinstance(section_ids, torch.Tensor):
        if (
            section_ids.dtype.is_floating_point
            or section_ids.dtype.is_complex
            or section_ids.dtype == torch.bool
        ):
            raise _bad_section_ids(f"dtype {section_ids.dtype}")
        if section_ids.numel() and bool(((section_ids < 0) | (section_ids >= NUM_SECTIONS)).any()):
            raise _bad_section_ids(f"values {section_ids.unique().tolist()}")
        return torch.as_tensor(table, device=section_ids.device)[section_ids.long()]
    ids = np.asarray(section_ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise _bad_section_ids(f"dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= NUM_SECTIONS):
        raise _bad_section_ids(f"values {np.unique(ids).tolist()}")
    return table[ids.astype(np.int64)]


@dataclass(frozen=True)
class SupervisionPolicy:
    """Per-section CE/KD allocation. Frozen and hashable; build presets with :meth:`from_preset`.

    The bare default is plain SFT on the completion: CE weight 1 on COT and ANSWER, no KD.
    """

    prompt: SectionSupervision = _NONE
    cot: SectionSupervision = field(default_factory=lambda: SectionSupervision(ce_weight=1.0))
    answer: SectionSupervision = field(default_factory=lambda: SectionSupervision(ce_weight=1.0))

    def __post_init__(self) -> None:
        for name in CONTENT_SECTION_NAMES:
            if not isinstance(getattr(self, name), SectionSupervision):
                raise TypeError(
                    f"{name}: expected SectionSupervision, got {type(getattr(self, name)).__name__}."
                )

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        ce_weight: float = 0.5,
        kd_weight: float = 0.5,
        kd_temperature: float | None = None,
        ce_sections: str | None = None,
    ) -> SupervisionPolicy:
        """KD (and CE, unless ``ce_sections`` names another preset) on the sections of ``name``."""
        check_choice("preset", name, sorted(SUPERVISION_PRESETS))
        if ce_sections is not None:
            check_choice("ce_sections", ce_sections, sorted(SUPERVISION_PRESETS))
        kd = SUPERVISION_PRESETS[name]
        ce = SUPERVISION_PRESETS[ce_sections or name]
        per = {
            s.name.lower(): SectionSupervision(
                ce_weight if s in ce else 0.0,
                kd_weight if s in kd else 0.0,
                kd_temperature if s in kd else None,
            )
            for s in (Section.PROMPT, Section.COT, Section.ANSWER)
        }
        return cls(**per)

    def for_section(self, section: int) -> SectionSupervision:
        """The :class:`SectionSupervision` of a section id (``PAD`` -> nothing)."""
        return {Section.PROMPT: self.prompt, Section.COT: self.cot, Section.ANSWER: self.answer}.get(
            Section(section), _NONE
        )

    def _table(self, attr: str, default: float = 0.0) -> np.ndarray:
        values = [getattr(self.for_section(s), attr) for s in range(NUM_SECTIONS)]
        return np.array([default if v is None else v for v in values], dtype=np.float32)

    @property
    def supervised_sections(self) -> frozenset[int]:
        """Section ids with a CE or KD weight > 0."""
        return frozenset(
            s for s in range(NUM_SECTIONS) if self._table("ce_weight")[s] + self._table("kd_weight")[s] > 0
        )

    def ce_weights(self, section_ids: ArrayT) -> ArrayT:
        """Per-token CE weights, ``float32``, same shape as ``section_ids``."""
        return _lookup(self._table("ce_weight"), section_ids)

    def kd_weights(self, section_ids: ArrayT) -> ArrayT:
        """Per-token KD weights, ``float32``, same shape as ``section_ids``."""
        return _lookup(self._table("kd_weight"), section_ids)

    def kd_temperatures(self, section_ids: ArrayT, default: float = 1.0) -> ArrayT:
        """Per-token KD temperatures, ``float32`` (``default`` where a section sets none)."""
        return _lookup(self._table("kd_temperature", default), section_ids)

    @property
    def has_section_temperatures(self) -> bool:
        """Whether any section sets its own KD temperature."""
        return any(self.for_section(s).kd_temperature is not None for s in range(NUM_SECTIONS))

    def supervised_mask(self, section_ids: ArrayT) -> ArrayT:
        """``bool`` mask of tokens with CE or KD weight > 0."""
        return _lookup(self._table("ce_weight") + self._table("kd_weight") > 0, section_ids)

    def labels(self, input_ids: ArrayT, section_ids: ArrayT) -> ArrayT:
        """``input_ids`` where CE applies, else ``-100``; ``int64`` numpy / ``long`` torch."""
        has_ce = _lookup(self._table("ce_weight") > 0, section_ids)
        if isinstance(input_ids, torch.Tensor):
            return torch.where(has_ce, input_ids.long(), torch.full_like(input_ids.long(), IGNORE_INDEX))
        return np.where(has_ce, np.asarray(input_ids, dtype=np.int64), IGNORE_INDEX)

    def describe(self) -> str:
        """One line per section, e.g. ``cot: ce 0.5, kd 0.5, T default``."""
        lines = []
        for s in (Section.PROMPT, Section.COT, Section.ANSWER):
            sup = self.for_section(s)
            t = "default" if sup.kd_temperature is None else f"{sup.kd_temperature:g}"
            lines.append(f"{SECTION_NAMES[int(s)]}: ce {sup.ce_weight:g}, kd {sup.kd_weight:g}, T {t}")
        return "\n".join(lines)
