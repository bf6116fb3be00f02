"""Truncation policies (Distilling the Essence) and exact accounting of what they cut.

A policy looks only at one sequence's section ids and returns the sorted indices of the tokens
it keeps (``keep_indices``); :func:`truncate_sample` applies them to every per-token field and
records per section how many tokens were there and how many survived, and whether a sample lost
all its supervised tokens. Policies (``TRUNCATION_POLICIES``):

* :class:`LeadSpanProportion` keep the first ``⌊L·x⌋`` tokens, ``L`` the sequence's own length;
* :class:`KeepFirst`          a fixed token budget: keep the first ``max_tokens``;
* :class:`KeepWindow`         a contiguous window (``left`` / ``middle`` / ``right``) of
  ``⌊L·x⌋`` or ``max_tokens`` tokens; with ``x = 0.5`` these are the left/middle/right halves;
* :class:`CutAfterCot`        keep everything up to and including the last COT token (the
  closing marker of the last CoT); sequences without COT are kept whole;
* :class:`SectionPreserving`  within ``max_tokens``, keep PROMPT and ANSWER whole and shorten
  the CoT from its tail (keeping its opening and, by default, closing marker — measured in
  tokens on the tokenizer by :meth:`SectionPreserving.for_tokenizer`, as Qwen2.5 splits
  ``</think>`` into three); if prompt + answer + markers alone exceed the budget it falls back
  to :class:`KeepFirst` and counts a ``fallback``.

Supervised tokens are counted as the loss sees them: a target is every position but a sample's
first (labels shift; nothing in the sample predicts its first token, so a window that starts
mid-sample loses that token as a target too). Samples whose supervised targets all vanish are
counted (``samples_supervision_lost``) and then kept or dropped by the explicit
``on_supervision_lost`` option — never silently; samples cut to zero tokens are dropped and
counted (``samples_dropped``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

import numpy as np

from hf_cot_distill.core.sections import (
    NUM_SECTIONS,
    SECTION_NAMES,
    Section,
    require_fast_tokenizer,
    section_counts,
    section_runs,
)
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int


class TruncationPolicy(Protocol):
    """Anything with ``keep_indices(section_ids (L,) int) -> (K,) int64 sorted indices``."""

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray: ...


def _check_proportion(name: str, value: float) -> None:
    check_float(
        name, value, minimum=0.0, maximum=1.0, min_open=True, fix="e.g. 0.5 keeps half of each sequence"
    )


def _set_int(policy: object, name: str, fix: str) -> None:
    """Check that ``policy.<name>`` is an int >= 1 (numpy ints too) and store it as ``int``."""
    object.__setattr__(policy, name, check_int(name, getattr(policy, name), minimum=1, fix=fix))  # frozen


def _check_budget(policy: object) -> None:
    _set_int(policy, "max_tokens", "e.g. 4096")


def proportion_length(length: int, proportion: float) -> int:
    """``⌊length · proportion⌋`` computed exactly for the decimal the user wrote.

    ``proportion`` is read as its shortest decimal repr (``0.7`` is ``7/10``, not the binary
    float ``0.6999…``), so ``proportion_length(90, 0.7) == 63`` where ``math.floor(90 * 0.7)``
    gives 62. Every proportion-sized cut (lead span, proportional windows) goes through here.
    """
    return math.floor(length * Fraction(repr(float(proportion))))


@dataclass(frozen=True)
class LeadSpanProportion:
    """Keep the first ``⌊L·lead_span_proportion⌋`` tokens of each sequence of length ``L``."""

    lead_span_proportion: float

    def __post_init__(self) -> None:
        _check_proportion("lead_span_proportion", self.lead_span_proportion)

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray:
        return np.arange(proportion_length(len(section_ids), self.lead_span_proportion), dtype=np.int64)


@dataclass(frozen=True)
class KeepFirst:
    """Keep the first ``max_tokens`` tokens (a fixed token budget)."""

    max_tokens: int

    def __post_init__(self) -> None:
        _check_budget(self)

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray:
        return np.arange(min(len(section_ids), self.max_tokens), dtype=np.int64)


@dataclass(frozen=True)
class KeepWindow:
    """Keep one contiguous window at ``position``, sized by ``window_proportion`` or ``max_tokens``."""

    position: Literal["left", "middle", "right"]
    window_proportion: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        check_choice("position", self.position, ("left", "middle", "right"))
        if (self.window_proportion is None) == (self.max_tokens is None):
            raise ValueError(
                f"window_proportion/max_tokens: got {self.window_proportion!r}/{self.max_tokens!r}; "
                "fix: set exactly one of them."
            )
        if self.window_proportion is not None:
            _check_proportion("window_proportion", self.window_proportion)
        if self.max_tokens is not None:
            _check_budget(self)

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray:
        n = len(section_ids)
        if self.window_proportion is not None:
            width = proportion_length(n, self.window_proportion)
        else:
            width = min(n, self.max_tokens or n)
        start = {"left": 0, "middle": (n - width) // 2, "right": n - width}[self.position]
        return np.arange(start, start + width, dtype=np.int64)


@dataclass(frozen=True)
class CutAfterCot:
    """Keep everything up to and including the last COT token (the CoT's closing marker)."""

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray:
        cot = np.flatnonzero(np.asarray(section_ids) == Section.COT)
        return np.arange(len(section_ids) if cot.size == 0 else cot[-1] + 1, dtype=np.int64)


@dataclass(frozen=True)
class SectionPreserving:
    """Fit ``max_tokens`` by shortening CoT runs from their tail; PROMPT and ANSWER stay whole.

    Each CoT run keeps its opening marker (its first ``cot_open_tokens`` tokens) and, with
    ``keep_cot_close``, its closing marker (its last ``cot_close_tokens`` tokens); the tokens
    removed are shared among runs in proportion to their removable length.
    ``fell_back(section_ids)`` tells when the budget did not allow it.

    A marker is one token when the tokenizer has it as a token (Qwen3's ``<think>``, the CoT-ICL
    Lab special tokens: the defaults) and several otherwise (Qwen2.5 splits ``</think>\\n\\n``
    into ``</``, ``think``, ``>\\n\\n``): build the policy with :meth:`for_tokenizer`, which
    measures the markers with the tokenizer (:func:`cot_marker_token_counts`).
    """

    max_tokens: int
    keep_cot_close: bool = True
    cot_open_tokens: int = 1
    cot_close_tokens: int = 1

    def __post_init__(self) -> None:
        _check_budget(self)
        object.__setattr__(self, "keep_cot_close", check_bool("keep_cot_close", self.keep_cot_close))
        for name in ("cot_open_tokens", "cot_close_tokens"):
            _set_int(
                self,
                name,
                "the CoT marker's length in tokens, e.g. 1 for a marker that is one token, or build the "
                "policy with SectionPreserving.for_tokenizer(max_tokens, tokenizer)",
            )
        if not self.keep_cot_close and self.cot_close_tokens != 1:
            raise ValueError(
                f"cot_close_tokens: {self.cot_close_tokens} with keep_cot_close=False protects nothing; fix: "
                "set keep_cot_close=True to keep the closing marker, or leave cot_close_tokens at 1."
            )

    @classmethod
    def for_tokenizer(
        cls,
        max_tokens: int,
        tokenizer: Any,
        *,
        keep_cot_close: bool = True,
        markers: Any = None,
    ) -> SectionPreserving:
        """The policy with ``cot_open_tokens`` / ``cot_close_tokens`` measured on ``tokenizer``
        for ``markers``, the encoder's ``render_markers`` (``None``: ``<think>`` / ``</think>``)."""
        n_open, n_close = cot_marker_token_counts(tokenizer, markers)
        return cls(max_tokens, keep_cot_close, n_open, n_close if keep_cot_close else 1)

    def _removable(self, section_ids: np.ndarray) -> list[tuple[int, int]]:
        """``(start, length)`` of the removable middle of each COT run (its markers stay)."""
        head = self.cot_open_tokens
        spare = head + (self.cot_close_tokens if self.keep_cot_close else 0)
        return [
            (start + head, end - start - spare)
            for sec, start, end in section_runs(section_ids)
            if sec == Section.COT and end - start > spare
        ]

    def fell_back(self, section_ids: np.ndarray) -> bool:
        """Whether the budget is too small to keep everything but CoT tails."""
        excess = len(section_ids) - self.max_tokens
        return excess > 0 and excess > sum(n for _, n in self._removable(section_ids))

    def keep_indices(self, section_ids: np.ndarray) -> np.ndarray:
        section_ids = np.asarray(section_ids)
        excess = len(section_ids) - self.max_tokens
        if excess <= 0:
            return np.arange(len(section_ids), dtype=np.int64)
        if self.fell_back(section_ids):
            return KeepFirst(self.max_tokens).keep_indices(section_ids)
        removable = self._removable(section_ids)
        total = sum(n for _, n in removable)
        shares = [excess * n // total for _, n in removable]
        for i in np.argsort([-(excess * n % total) for _, n in removable], kind="stable")[
            : excess - sum(shares)
        ]:
            shares[i] += 1  # largest remainders get the leftover tokens
        keep = np.ones(len(section_ids), dtype=bool)
        for (start, n), cut in zip(removable, shares):
            keep[start + n - cut : start + n] = False
        return np.flatnonzero(keep).astype(np.int64)


#: Text around a marker in the probes of :func:`cot_marker_token_counts`: what precedes the
#: opener (the generation prompt), what the reasoning starts / ends with, what the answer starts with.
_PROBE_BEFORE = ("", "\n", " ", "x", ":", "assistant\n", "<|im_start|>assistant\n", "Assistant: ")
_PROBE_REASONING = ("", *"aA1. \n<>", "  ", "</", "$x$", "think", "é", "中文", "😀")
_PROBE_ANSWER = ("", "a", "The", "1", " ", "\n", ".", "<", ">", "$", "中", "😀")


def cot_marker_token_counts(tokenizer: Any, markers: Any = None) -> tuple[int, int]:
    """How many tokens the opening / closing CoT marker take at the ends of a COT run.

    ``markers``: the ``render_markers`` the traces are encoded with (a
    :class:`~hf_cot_distill.data.traces.formats.TraceMarkers`; ``None``: ``<think>`` / ``</think>``).
    A marker's tokens depend on the text beside it (Qwen2.5: ``<th ink >\\n`` after a newline,
    `` < think >\\n`` after a space; ``</ think >\\n\\n`` where the answer follows), so the
    markers are tokenized in the rendered layout ``{open}\\n{reasoning}\\n{close}{separator}{answer}``
    (:func:`hf_cot_distill.data.traces.encoding.render_sample`) across many neighbours, and the
    largest count is returned. Counts follow the section rule of
    :func:`hf_cot_distill.core.sections.section_ids_from_offsets` (a token belongs to the section of
    its first character): opener = tokens starting inside the opening marker; closer = tokens
    overlapping the closing marker (a token reaching into it from the reasoning is COT too), or
    1 when the closing marker heads the answer (``close_opens_answer``) and is no part of the CoT.
    Needs a fast tokenizer (offsets).
    """
    require_fast_tokenizer(tokenizer)
    think_open = "<think>" if markers is None else markers.think_open
    think_close = "</think>" if markers is None else markers.think_close
    separator = getattr(markers, "answer_separator", "\n\n")
    for name, marker in (("think_open", think_open), ("think_close", think_close)):
        if not (isinstance(marker, str) and marker):
            raise ValueError(f"markers.{name}={marker!r}: must be a non-empty string; fix: e.g. '<think>'.")
    texts, spans = [], []
    for before in _PROBE_BEFORE:
        for reasoning in _PROBE_REASONING:
            for answer in _PROBE_ANSWER:
                head = f"{before}{think_open}\n{reasoning}\n"
                texts.append(f"{head}{think_close}{separator}{answer}")
                spans.append(
                    (len(before), len(before) + len(think_open), len(head), len(head) + len(think_close))
                )
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    n_open = n_close = 1
    for offsets, (o0, o1, c0, c1) in zip(enc["offset_mapping"], spans):
        start, end = np.asarray(offsets, dtype=np.int64).reshape(-1, 2).T
        n_open = max(n_open, int(np.sum((start >= o0) & (start < o1))))
        n_close = max(n_close, int(np.sum((start < c1) & (end > c0))))
    return n_open, 1 if getattr(markers, "close_opens_answer", False) else n_close


TRUNCATION_POLICIES: dict[str, type] = {
    "lead_span_proportion": LeadSpanProportion,
    "keep_first": KeepFirst,
    "keep_window": KeepWindow,
    "cut_after_cot": CutAfterCot,
    "section_preserving": SectionPreserving,
}


def _zeros() -> np.ndarray:
    return np.zeros(NUM_SECTIONS, dtype=np.int64)


@dataclass
class TruncationAccounting:
    """What truncation cut, per section; add with ``+`` / :meth:`merge` across batches/workers.

    ``tokens_before`` / ``tokens_kept``: ``(NUM_SECTIONS,)`` ``int64`` counts by section id;
    ``supervised_before`` / ``supervised_kept``: targets (every position but a sample's first)
    with CE or KD weight > 0, before the cut and in the kept sample — what the loss trains on.
    """

    samples: int = 0
    samples_truncated: int = 0
    samples_supervision_lost: int = 0
    samples_dropped: int = 0
    fallbacks: int = 0
    tokens_before: np.ndarray = field(default_factory=_zeros)
    tokens_kept: np.ndarray = field(default_factory=_zeros)
    supervised_before: int = 0
    supervised_kept: int = 0

    def merge(self, other: TruncationAccounting) -> TruncationAccounting:
        """A new object holding the sum of both."""
        return TruncationAccounting(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in self.__dataclass_fields__  # all fields add
            }
        )

    __add__ = merge

    @property
    def tokens_removed(self) -> np.ndarray:
        """``(NUM_SECTIONS,)`` ``int64`` tokens cut per section."""
        return self.tokens_before - self.tokens_kept

    def kept_fraction(self, section: int) -> float:
        """Fraction of the section's tokens that survived (1.0 when there were none)."""
        before = int(self.tokens_before[int(section)])
        return 1.0 if before == 0 else int(self.tokens_kept[int(section)]) / before

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for a logger: ``tokens_kept/cot``, ``kept_fraction/cot``, counters…"""
        out: dict[str, float] = {
            name: getattr(self, name)
            for name in (
                "samples",
                "samples_truncated",
                "samples_supervision_lost",
                "samples_dropped",
                "fallbacks",
            )
        }
        out.update(supervised_before=self.supervised_before, supervised_kept=self.supervised_kept)
        for s in (Section.PROMPT, Section.COT, Section.ANSWER):
            name = SECTION_NAMES[int(s)]
            out[f"tokens_before/{name}"] = int(self.tokens_before[s])
            out[f"tokens_kept/{name}"] = int(self.tokens_kept[s])
            out[f"kept_fraction/{name}"] = self.kept_fraction(s)
        return out

    def report(self) -> str:
        """Human-readable lines, e.g. ``cot: trained on 512/1024 tokens (50.0%)``."""
        lines = [
            f"samples: {self.samples}, truncated {self.samples_truncated}, lost all supervised tokens "
            f"{self.samples_supervision_lost} (dropped {self.samples_dropped}), fallbacks {self.fallbacks}"
        ]
        for s in (Section.PROMPT, Section.COT, Section.ANSWER):
            kept, before = int(self.tokens_kept[s]), int(self.tokens_before[s])
            lines.append(
                f"{SECTION_NAMES[int(s)]}: trained on {kept}/{before} tokens ({100 * self.kept_fraction(s):.1f}%)"
            )
        return "\n".join(lines)


def truncate_sample(
    features: Mapping[str, Any],
    policy: TruncationPolicy | None,
    supervised_mask: np.ndarray,
    accounting: TruncationAccounting,
    on_supervision_lost: Literal["keep", "drop"] = "keep",
) -> dict[str, Any] | None:
    """Apply ``policy`` to one sample and add what it cut to ``accounting``.

    Args:
        features: must hold ``section_ids`` ``(L,)``; every value of length ``L`` (``input_ids``,
            ``labels``, ``attention_mask``…) is cut the same way, others pass through.
        policy: ``None`` keeps everything (still counted).
        supervised_mask: ``(L,)`` bool, tokens with CE or KD weight > 0. Only targets count: the
            first token of the sample, and of what is kept, is never one (labels shift).
        on_supervision_lost: keep or drop a sample that had supervised targets and has none left
            (counted in ``samples_supervision_lost`` either way).

    Returns:
        The kept features (per-token values as numpy arrays), or ``None`` when the sample is
        dropped (``samples_dropped``): by ``on_supervision_lost="drop"`` or because no token is
        left at all (an empty sequence cannot be batched). Dropped samples add nothing to
        ``tokens_kept`` / ``supervised_kept``: those count what is trained on.
    """
    check_choice("on_supervision_lost", on_supervision_lost, ("keep", "drop"))
    section_ids = np.asarray(features["section_ids"], dtype=np.int64)
    n = len(section_ids)
    keep = np.arange(n, dtype=np.int64) if policy is None else policy.keep_indices(section_ids)
    supervised_mask = np.asarray(supervised_mask, dtype=bool)
    if len(supervised_mask) != n:
        raise ValueError(
            f"supervised_mask: length {len(supervised_mask)} != section_ids length {n}; fix: one flag per token."
        )
    # targets only: position 0 of the sample, and of the kept tokens, is predicted by nothing
    before, kept = int(supervised_mask[1:].sum()), int(supervised_mask[keep[1:]].sum())
    lost = before > 0 and kept == 0
    accounting.samples += 1
    accounting.samples_truncated += int(len(keep) < n)
    accounting.samples_supervision_lost += int(lost)
    accounting.fallbacks += int(isinstance(policy, SectionPreserving) and policy.fell_back(section_ids))
    accounting.tokens_before += section_counts(section_ids)
    accounting.supervised_before += before
    if len(keep) == 0 or (lost and on_supervision_lost == "drop"):
        accounting.samples_dropped += 1
        return None
    accounting.tokens_kept += section_counts(section_ids[keep])
    accounting.supervised_kept += kept
    return {
        k: (np.asarray(v)[keep] if hasattr(v, "__len__") and len(v) == n and not isinstance(v, str) else v)
        for k, v in features.items()
    }
