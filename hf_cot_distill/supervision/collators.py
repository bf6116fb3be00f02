"""``SectionCollator``: rows with section ids -> a padded or packed batch with CE/KD weights.

Input rows (from :class:`hf_cot_distill.data.traces.encoding.ReasoningTraceEncoder` or the CoT-ICL Lab
prompt strategies) are mappings with ``input_ids`` and ``section_ids`` (equal-length int lists
or arrays) and optionally ``attention_mask`` (positions with 0 are removed first) and ``labels``
(unshifted: each entry is the token itself or ``-100``; ``-100`` turns CE off for that token,
KD is decided by sections alone). Other keys are ignored. Per row the collator:

1. applies the optional truncation policy and adds what it cut to ``self.accounting``;
2. counts rows whose supervised tokens all vanished and keeps or drops them as
   ``on_supervision_lost`` says (rows cut to zero tokens are always dropped and counted);
3. builds ``labels``, ``ce_weights``, ``kd_weights`` from the supervision policy.

Alignment: every per-token output is aligned to the **input tokens**, unshifted (the
transformers convention): position ``t`` describes target ``input_ids[t]``, predicted from the
logits at ``t - 1``; the model / loss shifts. The first token of each sample is never a target
(``labels = -100``, weights 0): nothing in the sample predicts it, and in a packed or
left-padded row the position before it belongs to another sample or to padding.

Output (``torch``): ``input_ids``, ``labels``, ``section_ids``, ``position_ids`` (packed only)
``long``; ``ce_weights``, ``kd_weights`` (and ``kd_temperatures`` if a section sets one)
``float32``; ``attention_mask`` ``long`` (padded only). Shapes ``(B, T)`` padded, ``(1, N)``
packed. With ``return_accounting=True`` the batch also holds ``truncation_accounting`` (this
batch's :class:`TruncationAccounting`) — use it when a ``DataLoader`` runs the collator in
worker processes, where ``self.accounting`` is not shared; pop it before ``model(**batch)``.

Packed (padding-free) mode follows transformers' packed path (``DataCollatorWithFlattening``,
``masking_utils.find_packed_sequence_indices``): samples are concatenated into one row,
``position_ids`` restart at 0 per sample, and **no** ``attention_mask`` is returned — the model
only infers the block-diagonal causal mask from ``position_ids`` when the mask is ``None`` and
no KV cache is passed: call the model with ``use_cache=False`` (a cache turns detection off and
attention silently leaks across samples; ``tests/test_collators.py`` checks both).
Padding to a multiple appends one padding segment with its own restarting positions.

No tokenizer calls and no ``torch.distributed`` calls happen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from hf_cot_distill.core.sections import NUM_SECTIONS, Section
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int, check_int_array
from hf_cot_distill.supervision.policy import IGNORE_INDEX, SupervisionPolicy
from hf_cot_distill.supervision.truncation import TruncationAccounting, TruncationPolicy, truncate_sample


def _int_array(value: Any, where: str) -> np.ndarray:
    """``value`` as a 1-D ``int64`` array; non-integers (floats would be cut) and other ranks are refused."""
    return check_int_array(
        where,
        value,
        fix="pass one row's integer ids, shape (n,) (lists of int or an integer array / tensor, as the tokenizer "
        "returns them without return_tensors; for a (1, n) tensor pass ids[0])",
    )


def _row_arrays(row: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
    """Validate one row; return ``input_ids``, ``section_ids`` and optional ``labels`` as int64."""
    for key in ("input_ids", "section_ids"):
        if key not in row:
            raise ValueError(
                f"features[{index}]: no {key!r} (keys {sorted(row)}); fix: encode rows with "
                "ReasoningTraceEncoder or a CoT-ICL prompt strategy, which add section_ids."
            )
    out = {
        k: _int_array(row[k], f"features[{index}].{k}")
        for k in ("input_ids", "section_ids", "labels")
        if k in row
    }
    n = len(out["input_ids"])
    for key, value in out.items():
        if len(value) != n:
            raise ValueError(
                f"features[{index}].{key}: length {len(value)} != input_ids length {n}; fix: align them."
            )
    if out["input_ids"].size and out["input_ids"].min() < 0:
        raise ValueError(
            f"features[{index}].input_ids: negative id {out['input_ids'].min()}; fix: token ids are >= 0 "
            "(-100 belongs in labels only)."
        )
    secs = out["section_ids"]
    if secs.size and (secs.min() < 0 or secs.max() >= NUM_SECTIONS):
        raise ValueError(
            f"features[{index}].section_ids: values {np.unique(secs).tolist()} outside 0..{NUM_SECTIONS - 1}; "
            "fix: use hf_cot_distill.core.sections.Section values (0 pad, 1 prompt, 2 cot, 3 answer)."
        )
    if "attention_mask" in row:
        given = np.asarray(row["attention_mask"])
        raw = check_int_array(
            f"features[{index}].attention_mask", given.astype(np.int64) if given.dtype == bool else given
        )
        if len(raw) != n:
            raise ValueError(f"features[{index}].attention_mask: length {len(raw)} != {n}; fix: align them.")
        if not np.isin(raw, (0, 1)).all():
            raise ValueError(
                f"features[{index}].attention_mask: values {np.unique(raw).tolist()[:5]} are not 0/1; fix: 1 keeps "
                "a token, 0 removes it."
            )
        mask = raw.astype(bool)
        out = {k: v[mask] for k, v in out.items()}
    labels = out.get("labels")
    if labels is not None and np.any((labels != IGNORE_INDEX) & (labels != out["input_ids"])):
        raise ValueError(
            f"features[{index}].labels: entries that are neither -100 nor the input token (shifted labels?); "
            "fix: give unshifted labels (labels[t] = input_ids[t] or -100), transformers shifts them."
        )
    return out


@dataclass
class SectionCollator:
    """Pad or pack section-tagged rows; apply truncation and supervision; keep accounting.

    Args:
        supervision: per-section CE/KD weights (default: CE on COT and ANSWER).
        pad_token_id: id written at padded positions (never a target); an int, e.g.
            ``tokenizer.pad_token_id`` or, for tokenizers without one (Llama, SmolLM),
            ``tokenizer.eos_token_id``.
        truncation: optional truncation policy (``hf_cot_distill.supervision.truncation``).
        padding_side: ``"right"`` or ``"left"`` (padded mode).
        pad_to_multiple_of: round the padded length (or packed total) up to a multiple.
        padding_free: pack the batch into one row with restarting ``position_ids``.
        on_supervision_lost: ``"keep"`` or ``"drop"`` rows whose supervised tokens all vanished.
        respect_row_labels: rows' ``-100`` labels turn CE off at those tokens.
        return_accounting: add this batch's ``truncation_accounting`` to the batch.
        default_kd_temperature: temperature at tokens whose section sets none.
        carry_source_positions: rows must hold ``cache_row`` (their index in the dataset a teacher
            cache was built on); the batch then also holds ``cache_row`` (one per kept sample, in
            batch order) and ``token_index`` (each token's index in its original row, ``-1`` at
            padding), so a trainer can find every position's cached targets after truncation.
    """

    supervision: SupervisionPolicy = field(default_factory=SupervisionPolicy)
    pad_token_id: int = 0
    truncation: TruncationPolicy | None = None
    padding_side: Literal["right", "left"] = "right"
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    on_supervision_lost: Literal["keep", "drop"] = "keep"
    respect_row_labels: bool = True
    return_accounting: bool = False
    default_kd_temperature: float = 1.0
    carry_source_positions: bool = False
    accounting: TruncationAccounting = field(default_factory=TruncationAccounting, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.supervision, SupervisionPolicy):
            hint = (
                f"SupervisionPolicy.from_preset({self.supervision!r})"
                if isinstance(self.supervision, str)
                else "SupervisionPolicy.from_preset('cot+answer')"
            )
            raise ValueError(
                f"supervision: {self.supervision!r} is not a SupervisionPolicy; fix: e.g. {hint}."
            )
        if self.truncation is not None and not callable(getattr(self.truncation, "keep_indices", None)):
            hint = {
                str: f"TRUNCATION_POLICIES[{self.truncation!r}](...) from hf_cot_distill.supervision.truncation, e.g. "
                "KeepFirst(4096)",
                float: f"LeadSpanProportion({self.truncation!r})",
                int: f"KeepFirst({self.truncation!r})",
            }.get(type(self.truncation), "KeepFirst(4096) or LeadSpanProportion(0.5)")
            raise ValueError(
                f"truncation: {self.truncation!r} is not a truncation policy (no keep_indices); fix: None or a "
                f"policy object, e.g. {hint}."
            )
        if self.pad_token_id is None:
            raise ValueError(
                "pad_token_id=None: must be an int >= 0 (the tokenizer has no pad token); fix: pass "
                "tokenizer.eos_token_id — padded positions are never attended to nor supervised, so any valid id "
                "works."
            )
        self.pad_token_id = check_int(
            "pad_token_id", self.pad_token_id, minimum=0, fix="pass an int >= 0, e.g. tokenizer.eos_token_id"
        )
        for name in ("padding_free", "respect_row_labels", "return_accounting", "carry_source_positions"):
            setattr(self, name, check_bool(name, getattr(self, name)))
        self.default_kd_temperature = check_float(
            "default_kd_temperature", self.default_kd_temperature, minimum=0.0, min_open=True, fix="e.g. 1.0"
        )
        check_choice("padding_side", self.padding_side, ("right", "left"))
        check_choice("on_supervision_lost", self.on_supervision_lost, ("keep", "drop"))
        if self.pad_to_multiple_of is not None:  # None: no rounding
            self.pad_to_multiple_of = check_int(
                "pad_to_multiple_of", self.pad_to_multiple_of, minimum=1, fix="pass an int >= 1, or None"
            )

    def reset_accounting(self) -> TruncationAccounting:
        """Return the running accounting and start a new one."""
        done, self.accounting = self.accounting, TruncationAccounting()
        return done

    def _weights(self, row: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``labels``, ``ce_weights``, ``kd_weights`` of every token of ``row`` (first included)."""
        ids, secs = row["input_ids"], row["section_ids"]
        labels = self.supervision.labels(ids, secs)
        if self.respect_row_labels and "labels" in row:
            labels = np.where(row["labels"] == IGNORE_INDEX, IGNORE_INDEX, labels)
        ce = np.where(labels == IGNORE_INDEX, 0.0, self.supervision.ce_weights(secs)).astype(np.float32)
        return labels, ce, self.supervision.kd_weights(secs).astype(np.float32)

    def _supervise(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        secs = row["section_ids"]
        labels, ce, kd = self._weights(row)
        labels[:1], ce[:1], kd[:1] = IGNORE_INDEX, 0.0, 0.0  # the first token is never a target
        out = {
            "input_ids": row["input_ids"],
            "labels": labels,
            "section_ids": secs,
            "ce_weights": ce,
            "kd_weights": kd,
        }
        if "token_index" in row:
            out["token_index"] = row["token_index"]
        if self.supervision.has_section_temperatures:
            out["kd_temperatures"] = self.supervision.kd_temperatures(secs, self.default_kd_temperature)
        return out

    def _prepare(self, features: Sequence[Mapping[str, Any]], accounting: TruncationAccounting) -> list[dict]:
        rows = []
        for i, feature in enumerate(features):
            row = _row_arrays(feature, i)
            if self.carry_source_positions:
                row["token_index"] = self._source_positions(feature, i, len(row["input_ids"]))
            _, ce, kd = self._weights(row)  # the same weights _supervise gives the kept tokens
            kept = truncate_sample(
                row, self.truncation, (ce > 0) | (kd > 0), accounting, self.on_supervision_lost
            )
            if kept is None:
                continue
            supervised = self._supervise(kept)
            if self.carry_source_positions:
                supervised["cache_row"] = int(feature["cache_row"])
            rows.append(supervised)
        return rows

    @staticmethod
    def _source_positions(feature: Mapping[str, Any], index: int, n: int) -> np.ndarray:
        if "cache_row" not in feature:
            raise ValueError(
                f"features[{index}]: no 'cache_row' with carry_source_positions=True; fix: add each row's index in "
                "the dataset the teacher cache was built on (dataset.add_column('cache_row', range(len(dataset))))."
            )
        mask = feature.get("attention_mask")
        if mask is not None and not np.asarray(mask).all():
            raise ValueError(
                f"features[{index}].attention_mask: zeros with a teacher cache, whose positions index the whole "
                "row; fix: drop the masked tokens from input_ids before building the cache and training."
            )
        return np.arange(n, dtype=np.int64)

    def _round_up(self, n: int) -> int:
        m = self.pad_to_multiple_of or 1
        return -(-n // m) * m

    def _pad_values(self) -> dict[str, float]:
        return {
            "input_ids": self.pad_token_id,
            "labels": IGNORE_INDEX,
            "section_ids": int(Section.PAD),
            "ce_weights": 0.0,
            "kd_weights": 0.0,
            "kd_temperatures": self.default_kd_temperature,
            "token_index": -1,
        }

    def _padded(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = self._round_up(max(len(r["input_ids"]) for r in rows))
        batch: dict[str, torch.Tensor] = {}
        for key, pad in self._pad_values().items():
            if key not in rows[0]:
                continue
            dtype = torch.float32 if key in ("ce_weights", "kd_weights", "kd_temperatures") else torch.long
            out = torch.full((len(rows), width), pad, dtype=dtype)
            for b, row in enumerate(rows):
                n = len(row[key])
                sl = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
                out[b, sl] = torch.from_numpy(np.asarray(row[key])).to(dtype)
            batch[key] = out
        batch["attention_mask"] = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["attention_mask"][
                b, slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ] = 1
        return batch

    def _packed(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        total = sum(len(r["input_ids"]) for r in rows)
        extra = self._round_up(total) - total
        batch: dict[str, torch.Tensor] = {}
        for key, pad in self._pad_values().items():
            if key not in rows[0]:
                continue
            dtype = torch.float32 if key in ("ce_weights", "kd_weights", "kd_temperatures") else torch.long
            parts = [torch.from_numpy(np.asarray(r[key])).to(dtype) for r in rows]
            parts.append(torch.full((extra,), pad, dtype=dtype))
            batch[key] = torch.cat(parts)[None, :]
        lengths = [len(r["input_ids"]) for r in rows] + ([extra] if extra else [])
        batch["position_ids"] = torch.cat([torch.arange(n) for n in lengths])[None, :]
        return batch

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` (a list of rows) into a batch; see the module docstring."""
        if not features:
            raise ValueError("features: empty list; fix: pass at least one row.")
        accounting = TruncationAccounting()
        rows = self._prepare(features, accounting)
        self.accounting = self.accounting + accounting  # counted even when the batch is refused
        if not rows:
            raise ValueError(
                f"features: all {len(features)} samples were dropped by truncation (cut to zero tokens, or "
                f"supervision lost with on_supervision_lost={self.on_supervision_lost!r}); fix: a larger "
                "truncation budget or a policy that keeps the supervised sections."
            )
        batch: dict[str, Any] = self._packed(rows) if self.padding_free else self._padded(rows)
        if self.carry_source_positions:
            batch["cache_row"] = torch.tensor([r["cache_row"] for r in rows], dtype=torch.long)
        if self.return_accounting:
            batch["truncation_accounting"] = accounting
        return batch
