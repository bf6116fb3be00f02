"""Encoding reasoning traces: canonical sample -> rendered text + character spans -> token ids
and section ids, batched for ``Dataset.map``, with the bad-input cases counted.

* :func:`render_sample`: one :class:`~hf_cot_distill.data.formats.ReasoningSample` through the
  tokenizer's chat template, returning the text, its COT/ANSWER character spans and the flags.
* :class:`ReasoningTraceEncoder`: the ``Dataset.map(batched=True)`` function (adapter -> render
  -> one fast-tokenizer call per batch -> section ids), with the ``on_*`` rules of the
  ``TRACE_CASES`` table in :mod:`hf_cot_distill.data.formats`.
* :class:`TraceStats` and :func:`encode_dataset`: count the cases, drop refused rows.

The layouts, markers, the canonical sample and the bad-input rules live in
:mod:`hf_cot_distill.data.formats`; section ids in :mod:`hf_cot_distill.sections`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hf_cot_distill.data.formats import (
    CASE_BITS,
    FORMAT_ADAPTERS,
    FORMAT_COLUMNS,
    MARKER_PRESETS,
    TRACE_CASES,
    ReasoningSample,
    TraceError,
    TraceMarkers,
    Turn,
)
from hf_cot_distill.sections import CharSpan, Section, require_fast_tokenizer, tokenize_with_sections


def _render_content(turn: Turn, markers: TraceMarkers, on_empty_cot: str) -> str:
    if not turn.reasoning and on_empty_cot == "refuse":
        raise TraceError("empty_cot", "reasoning: empty CoT; fix: use on_empty_cot='empty_block' or drop it.")
    return f"{markers.think_open}\n{turn.reasoning or ''}\n{markers.think_close}\n\n{turn.content}"


def render_sample(
    tokenizer: Any,
    sample: ReasoningSample,
    *,
    render_markers: TraceMarkers = MARKER_PRESETS["think"],
    end_of_turn: str = "<|im_end|>",
    turn_policy: Literal["last", "all"] = "last",
    on_empty_cot: Literal["empty_block", "refuse"] = "empty_block",
) -> tuple[str, list[CharSpan], int]:
    """Render ``sample`` with the tokenizer's chat template; return ``(text, spans, flags)``.

    Each supervised assistant turn ``i`` starts where ``messages[:i]`` rendered with
    ``add_generation_prompt=True`` ends (the header stays PROMPT) and ends after the first
    ``end_of_turn`` that follows. Inside it, ``render_markers.think_open`` … ``think_close``
    is COT and the rest ANSWER. The text stops after the last supervised turn.
    """
    if turn_policy not in ("last", "all"):
        raise ValueError(f"turn_policy: {turn_policy!r} is not 'last' or 'all'; fix: pick one of them.")
    messages = [
        {
            "role": t.role,
            "content": _render_content(t, render_markers, on_empty_cot)
            if t.role == "assistant"
            else t.content,
        }
        for t in sample.turns
    ]
    assistant_at = [i for i, t in enumerate(sample.turns) if t.role == "assistant"]
    supervised = assistant_at[-1:] if turn_policy == "last" else assistant_at
    if supervised[0] == 0:
        raise TraceError(
            "no_final_assistant_turn", "messages: conversation starts with the assistant; fix: add a prompt."
        )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[CharSpan] = []
    flags, end = sample.flags, 0
    for i in supervised:
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        if not full.startswith(prefix):
            raise ValueError(
                f"chat_template: rendering messages[:{i}] with add_generation_prompt=True is not a prefix of the "
                "full conversation; fix: use a prefix-stable chat template (e.g. ChatML)."
            )
        start = len(prefix)
        eot = full.find(end_of_turn, start)
        if eot < 0:
            raise ValueError(
                f"end_of_turn: {end_of_turn!r} not found after assistant turn {i}; "
                "fix: pass the marker the chat template closes assistant turns with."
            )
        end = eot + len(end_of_turn)
        body = full[start:end]
        o = body.find(render_markers.think_open)
        c = body.find(render_markers.think_close, max(o, 0))
        if o >= 0 and c >= 0:
            spans.append(CharSpan(start + o, start + c + len(render_markers.think_close), Section.COT))
            spans.append(CharSpan(start + c + len(render_markers.think_close), end, Section.ANSWER))
        else:
            if sample.turns[i].reasoning:
                flags |= CASE_BITS["reasoning_not_rendered"]
            spans.append(CharSpan(start, end, Section.ANSWER))
    return full[:end], spans, flags


@dataclass
class TraceStats:
    """How many samples hit each ``TRACE_CASES`` case; mergeable across batches and workers."""

    samples: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRACE_CASES, 0))

    @classmethod
    def from_flags(cls, flags: Sequence[int]) -> TraceStats:
        """Count a ``trace_flags`` column (one int bitmask per row)."""
        stats = cls(samples=len(flags))
        for name, bit in CASE_BITS.items():
            stats.counts[name] = sum(1 for f in flags if f & bit)
        return stats

    def merge(self, other: TraceStats) -> TraceStats:
        """A new object holding the sum of both."""
        counts = {k: self.counts.get(k, 0) + other.counts.get(k, 0) for k in TRACE_CASES}
        return TraceStats(self.samples + other.samples, counts)

    __add__ = merge

    def report(self) -> str:
        """One line per non-zero case: ``case: n (p%)``."""
        lines = [f"samples: {self.samples}"]
        for name, n in self.counts.items():
            if n:
                lines.append(f"{name}: {n} ({100.0 * n / max(self.samples, 1):.1f}%)")
        return "\n".join(lines)


@dataclass
class ReasoningTraceEncoder:
    """``Dataset.map(batched=True)`` function: rows of one layout -> ``input_ids``,
    ``attention_mask``, ``section_ids`` (lists of ints) and ``trace_flags`` (int bitmask).

    One fast-tokenizer call per batch. Picklable (for ``num_proc``) as long as the tokenizer is.
    """

    tokenizer: Any
    source_format: str = "messages"
    source_markers: TraceMarkers | None = None  # None: the adapter's default
    render_markers: TraceMarkers = MARKER_PRESETS["think"]
    end_of_turn: str = "<|im_end|>"
    turn_policy: Literal["last", "all"] = "last"
    max_length: int | None = None
    on_too_long: Literal["refuse", "keep"] = "refuse"
    on_empty_cot: Literal["empty_block", "refuse"] = "empty_block"
    on_invalid: Literal["raise", "drop"] = "raise"

    def __post_init__(self) -> None:
        require_fast_tokenizer(self.tokenizer)
        if self.source_format not in FORMAT_ADAPTERS:
            raise ValueError(
                f"source_format: {self.source_format!r} unknown; fix: one of {sorted(FORMAT_ADAPTERS)}."
            )
        for name, value, allowed in (
            ("turn_policy", self.turn_policy, ("last", "all")),
            ("on_too_long", self.on_too_long, ("refuse", "keep")),
            ("on_empty_cot", self.on_empty_cot, ("empty_block", "refuse")),
            ("on_invalid", self.on_invalid, ("raise", "drop")),
        ):
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name}: {value!r} not allowed; fix: one of {allowed}.")
        length = self.max_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(
                f"max_length: {length!r} is not None or a positive int; fix: e.g. max_length=4096."
            )
        for name in ("source_markers", "render_markers"):
            markers = getattr(self, name)
            if not isinstance(markers, TraceMarkers) and not (name == "source_markers" and markers is None):
                raise ValueError(
                    f"{name}: {markers!r} is not a TraceMarkers; fix: one of MARKER_PRESETS "
                    f"{sorted(MARKER_PRESETS)}, e.g. MARKER_PRESETS['think']."
                )
        if not isinstance(self.end_of_turn, str) or not self.end_of_turn:
            raise ValueError(
                f"end_of_turn: {self.end_of_turn!r} is not a non-empty string; fix: e.g. '<|im_end|>'."
            )

    def _render(self, row: Mapping[str, Any]) -> tuple[str, list[CharSpan], int]:
        adapter = FORMAT_ADAPTERS[self.source_format]
        sample = adapter(row) if self.source_markers is None else adapter(row, self.source_markers)
        return render_sample(
            self.tokenizer,
            sample,
            render_markers=self.render_markers,
            end_of_turn=self.end_of_turn,
            turn_policy=self.turn_policy,
            on_empty_cot=self.on_empty_cot,
        )

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        missing = FORMAT_COLUMNS[self.source_format] - set(batch)
        if missing:
            raise ValueError(
                f"columns: {sorted(missing)} missing for source_format={self.source_format!r} (got "
                f"{sorted(batch)}); fix: rename the columns or pick the layout they follow."
            )
        n = len(next(iter(batch.values())))
        texts: list[str] = []
        spans: list[list[CharSpan]] = []
        flags: list[int] = []
        for r in range(n):
            try:
                text, row_spans, row_flags = self._render({k: v[r] for k, v in batch.items()})
            except TraceError as err:
                if self.on_invalid == "raise":
                    raise
                text, row_spans, row_flags = "", [], CASE_BITS[err.case] | CASE_BITS["dropped"]
            texts.append(text)
            spans.append(row_spans)
            flags.append(row_flags)
        input_ids, section_ids = tokenize_with_sections(self.tokenizer, texts, spans)
        for r, ids in enumerate(input_ids):
            if self.max_length is not None and len(ids) > self.max_length:
                flags[r] |= CASE_BITS["too_long"]
                if self.on_too_long == "refuse":
                    if self.on_invalid == "raise":
                        raise TraceError(
                            "too_long",
                            f"max_length: row {r} has {len(ids)} tokens > {self.max_length}; fix: raise "
                            "max_length, use on_too_long='keep' with a truncation policy, or on_invalid='drop'.",
                        )
                    flags[r] |= CASE_BITS["dropped"]
                    input_ids[r], section_ids[r] = [], []
        return {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "section_ids": section_ids,
            "trace_flags": flags,
        }


def encode_dataset(dataset: Any, encoder: ReasoningTraceEncoder, **map_kwargs: Any) -> tuple[Any, TraceStats]:
    """Map ``dataset`` with ``encoder`` (batched), count cases, drop refused rows.

    ``map_kwargs`` go to ``Dataset.map`` (``num_proc``, ``batch_size``…). Returns the encoded
    dataset (original columns removed, ``trace_flags`` kept) and the :class:`TraceStats`.
    """
    encoded = dataset.map(encoder, batched=True, remove_columns=dataset.column_names, **map_kwargs)
    stats = TraceStats.from_flags(encoded["trace_flags"])
    if stats.counts["dropped"]:
        dropped = CASE_BITS["dropped"]
        encoded = encoded.filter(
            lambda flags: [not f & dropped for f in flags], input_columns="trace_flags", batched=True
        )
    return encoded, stats
