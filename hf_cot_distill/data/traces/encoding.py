"""Encoding reasoning traces: canonical sample -> rendered text + character spans -> token ids
and section ids, batched for ``Dataset.map``, with the bad-input cases counted.

* :func:`render_sample`: one :class:`~hf_cot_distill.data.traces.formats.ReasoningSample` through the
  tokenizer's chat template, returning the text, its COT/ANSWER character spans and the flags.
* :class:`ReasoningTraceEncoder`: the ``Dataset.map(batched=True)`` function (adapter -> render
  -> one fast-tokenizer call per batch -> section ids), with the ``on_*`` rules of the
  ``TRACE_CASES`` table in :mod:`hf_cot_distill.data.traces.formats`.
* :class:`TraceStats` and :func:`encode_dataset`: count the cases, drop refused rows; the encoded
  dataset's fingerprint is :func:`encoding_fingerprint` (tokenizer, settings, code), cheap and
  stable across processes.

The layouts, markers, the canonical sample and the bad-input rules live in
:mod:`hf_cot_distill.data.traces.formats`; section ids in :mod:`hf_cot_distill.core.sections`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_cot_distill.core.sections import CharSpan, Section, require_fast_tokenizer, tokenize_with_sections
from hf_cot_distill.core.validation import check_choice, check_int
from hf_cot_distill.data.traces.formats import (
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


def _render_content(
    turn: Turn, markers: TraceMarkers, *, supervised: bool, on_empty_cot: str, where: str
) -> tuple[str, int]:
    """An assistant turn's content and the length of its COT part (0 when no block is rendered).

    A turn whose source has no think block (``reasoning is None``) is rendered as given, except
    a supervised turn under ``on_empty_cot="empty_block"``, which gets an empty block.
    """
    reasoning = turn.reasoning
    if supervised and not reasoning:
        if on_empty_cot == "refuse":
            raise TraceError(
                "empty_cot",
                f"{where}.reasoning: empty CoT; fix: use on_empty_cot='empty_block' or 'as_given', or drop it.",
            )
        if reasoning is None and on_empty_cot == "empty_block":
            reasoning = ""
    if reasoning is None:
        header = markers.think_close + markers.answer_separator if markers.close_opens_answer else ""
        return header + turn.content, 0
    cot = f"{markers.think_open}\n{reasoning}\n"
    if not markers.close_opens_answer:
        cot += markers.think_close
        return cot + markers.answer_separator + turn.content, len(cot)
    return cot + markers.think_close + markers.answer_separator + turn.content, len(cot)


def _find_in_turn(full: str, needle: str, start: int, end_of_turn: str, *, blank_head: bool = False) -> int:
    """Where ``needle`` starts inside the turn that starts at ``start`` (no ``end_of_turn``
    before it; with ``blank_head``, only whitespace before it), or -1."""
    at = full.find(needle, start)
    head = full[start:at]
    if at < 0 or end_of_turn in head or (blank_head and head.strip()):
        return -1
    return at


def render_sample(
    tokenizer: Any,
    sample: ReasoningSample,
    *,
    render_markers: TraceMarkers = MARKER_PRESETS["think"],
    end_of_turn: str = "<|im_end|>",
    turn_policy: Literal["last", "all"] = "last",
    on_empty_cot: Literal["empty_block", "as_given", "refuse"] = "empty_block",
) -> tuple[str, list[CharSpan], int]:
    """Render ``sample`` with the tokenizer's chat template; return ``(text, spans, flags)``.

    Each supervised assistant turn ``i`` starts where ``messages[:i]`` rendered with
    ``add_generation_prompt=True`` ends (the header stays PROMPT). Its sections come from the
    lengths of what was rendered, never from searching marker text (reasoning may mention
    ``</think>``, an answer may mention ``<|im_end|>``): the content is found verbatim in the turn,
    its think block (and any text the template put before the content) is COT, the rest up to
    and including the first ``end_of_turn`` after the content is ANSWER. When the template
    dropped the reasoning and rendered the answer alone (Qwen3, turns before the last user
    query), the turn is ANSWER (``reasoning_not_rendered``); when it rewrote the content in any
    other way (Qwen3 re-splits content at ``</think>``), the sample is refused
    (``malformed_markers``). The text stops after the last supervised turn. A supervised turn
    with an empty answer sets ``empty_answer`` (the encoder's ``on_empty_answer`` rule acts on it).
    """
    check_choice("turn_policy", turn_policy, ("last", "all"))
    assistant_at = [i for i, t in enumerate(sample.turns) if t.role == "assistant"]
    supervised = assistant_at[-1:] if turn_policy == "last" else assistant_at
    if not supervised or supervised[0] == 0:
        raise TraceError(
            "no_final_assistant_turn", "messages: conversation starts with the assistant; fix: add a prompt."
        )
    flags = sample.flags
    rendered: dict[int, tuple[str, int]] = {}
    for i in assistant_at:
        rendered[i] = _render_content(
            sample.turns[i],
            render_markers,
            supervised=i in supervised,
            on_empty_cot=on_empty_cot,
            where=f"messages[{i}]",
        )
    if any(not sample.turns[i].content for i in supervised):
        flags |= CASE_BITS["empty_answer"]
    messages = [
        {"role": t.role, "content": rendered[i][0] if i in rendered else t.content}
        for i, t in enumerate(sample.turns)
    ]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[CharSpan] = []
    end = 0
    for i in supervised:
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        if not full.startswith(prefix):
            raise ValueError(
                f"chat_template: rendering messages[:{i}] with add_generation_prompt=True is not a prefix of the "
                "full conversation; fix: use a prefix-stable chat template (e.g. ChatML)."
            )
        start = len(prefix)
        content, cot_len = rendered[i]
        at = _find_in_turn(full, content + end_of_turn, start, end_of_turn)
        if at >= 0:  # verbatim; text the template put before the content joins the COT
            end = at + len(content) + len(end_of_turn)
            if at + cot_len > start:
                spans.append(CharSpan(start, at + cot_len, Section.COT))
            spans.append(CharSpan(at + cot_len, end, Section.ANSWER))
            continue
        answer = content[cot_len:].lstrip()
        at = _find_in_turn(full, answer + end_of_turn, start, end_of_turn, blank_head=True)
        if at >= 0:  # the template dropped the reasoning (Qwen3 before the last user query)
            end = at + len(answer) + len(end_of_turn)
            if sample.turns[i].reasoning:
                flags |= CASE_BITS["reasoning_not_rendered"]
            spans.append(CharSpan(start, end, Section.ANSWER))
            continue
        turn = sample.turns[i]
        markers = (render_markers.think_open, render_markers.think_close, "<think>", "</think>")
        if any(m in (turn.reasoning or "") + turn.content for m in markers):
            raise TraceError(
                "malformed_markers",
                f"messages[{i}]: the chat template rewrote this assistant turn, whose text contains a think "
                "marker (Qwen3's template re-splits the content at '</think>'), so its COT/ANSWER sections "
                "cannot be placed; fix: remove the marker from the reasoning/answer or drop the row.",
            )
        raise ValueError(
            f"chat_template: assistant turn {i} is not rendered as its content (or its answer alone) followed "
            f"by end_of_turn={end_of_turn!r}; fix: pass the end_of_turn the template closes assistant turns "
            "with, or use a template that renders the content verbatim (e.g. ChatML)."
        )
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
    on_empty_cot: Literal["empty_block", "as_given", "refuse"] = "empty_block"
    on_empty_answer: Literal["refuse", "keep"] = "refuse"
    on_invalid: Literal["raise", "drop"] = "raise"

    def __post_init__(self) -> None:
        require_fast_tokenizer(self.tokenizer)
        check_choice("source_format", self.source_format, sorted(FORMAT_ADAPTERS))
        for name, value, allowed in (
            ("turn_policy", self.turn_policy, ("last", "all")),
            ("on_too_long", self.on_too_long, ("refuse", "keep")),
            ("on_empty_cot", self.on_empty_cot, ("empty_block", "as_given", "refuse")),
            ("on_empty_answer", self.on_empty_answer, ("refuse", "keep")),
            ("on_invalid", self.on_invalid, ("raise", "drop")),
        ):
            check_choice(name, value, allowed)
        if self.max_length is not None:  # None: no limit
            check_int(
                "max_length", self.max_length, minimum=1, fix="e.g. max_length=4096, or None for no limit"
            )
        for name in ("source_markers", "render_markers"):
            markers = getattr(self, name)
            if not isinstance(markers, TraceMarkers) and not (name == "source_markers" and markers is None):
                raise ValueError(
                    f"{name}={markers!r}: must be a TraceMarkers; fix: one of MARKER_PRESETS "
                    f"{sorted(MARKER_PRESETS)}, e.g. MARKER_PRESETS['think']."
                )
        if not isinstance(self.end_of_turn, str) or not self.end_of_turn:
            raise ValueError(
                f"end_of_turn={self.end_of_turn!r}: must be a non-empty string; fix: e.g. '<|im_end|>'."
            )
        if self.render_markers.close_opens_answer and self.on_empty_cot == "empty_block":
            raise ValueError(
                f"on_empty_cot: 'empty_block' would add an empty {self.render_markers.think_open!r} block to "
                "answers that have none, and these render markers have no empty-block form; fix: "
                "on_empty_cot='as_given' (a direct answer stays ANSWER) or 'refuse'."
            )

    def _render(self, row: Mapping[str, Any]) -> tuple[str, list[CharSpan], int]:
        adapter = FORMAT_ADAPTERS[self.source_format]
        sample = adapter(row) if self.source_markers is None else adapter(row, self.source_markers)
        text, spans, flags = render_sample(
            self.tokenizer,
            sample,
            render_markers=self.render_markers,
            end_of_turn=self.end_of_turn,
            turn_policy=self.turn_policy,
            on_empty_cot=self.on_empty_cot,
        )
        if flags & CASE_BITS["empty_answer"] and self.on_empty_answer == "refuse":
            raise TraceError(
                "empty_answer",
                "answer: a supervised assistant turn has nothing after its CoT (a trace cut after its "
                "reasoning?); fix: on_empty_answer='keep' to train on it, or on_invalid='drop'.",
            )
        return text, spans, flags

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


#: Bumped when the encoding's output changes in a way its source files do not show.
ENCODING_FINGERPRINT_VERSION = 1
# ``Dataset.map`` arguments that do not change what it writes (``datasets`` ignores the same ones).
_UNHASHED_MAP_KWARGS = frozenset({"load_from_cache_file", "cache_file_name", "desc", "new_fingerprint"})


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides a fast tokenizer's encoding of a trace, read from the tokenizer in
    memory (changes made after loading count): its backend JSON (``tokenizer.json``: vocabulary,
    merges, normalizer, pre-tokenizer, added tokens, truncation and padding), its chat template,
    special tokens and the settings the Python wrapper applies. Stable across processes; ~0.2 s
    for Qwen2.5's 151k-token tokenizer where ``datasets``' pickling hash of it takes seconds."""
    require_fast_tokenizer(tokenizer)
    wrapper = {
        "class": type(tokenizer).__name__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": getattr(tokenizer, "special_tokens_map", {}),
        **{
            k: getattr(tokenizer, k, None)
            for k in ("split_special_tokens", "padding_side", "truncation_side", "model_max_length")
        },
    }
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update(json.dumps(wrapper, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _stable_json(value: Any) -> str:
    """``value`` as canonical JSON; a value JSON cannot hold is replaced by ``datasets``' own
    deterministic hash of it (never by a ``repr`` that holds a memory address)."""

    def fallback(obj: Any) -> str:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return _stable_json(dataclasses.asdict(obj))
        from datasets.fingerprint import Hasher

        return f"{type(obj).__qualname__}:{Hasher.hash(obj)}"

    return json.dumps(value, sort_keys=True, default=fallback)


def _encoding_sources() -> bytes:
    """The source of the modules that decide the encoding (this one, the layouts and markers,
    section ids): a code change gives new fingerprints, so ``datasets`` never reuses a cache file
    written by older code."""
    from hf_cot_distill.core import sections
    from hf_cot_distill.data.traces import formats

    return b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], formats, sections))


def encoding_fingerprint(dataset: Any, encoder: ReasoningTraceEncoder, **map_kwargs: Any) -> str:
    """The fingerprint :func:`encode_dataset` gives the encoded dataset: sha256 (first 32 hex
    digits, as ``datasets`` fingerprints are short) over the input dataset's fingerprint, the
    tokenizer (:func:`tokenizer_fingerprint`), the encoder's settings, the ``Dataset.map``
    arguments and the encoding code. It replaces ``datasets``' default, a pickling hash of the
    encoder that serialises the whole tokenizer on every call (2.3 s for Qwen2.5)."""
    settings = {
        f.name: getattr(encoder, f.name) for f in dataclasses.fields(encoder) if f.name != "tokenizer"
    }
    kwargs = {k: v for k, v in map_kwargs.items() if k not in _UNHASHED_MAP_KWARGS}
    h = hashlib.sha256(f"encode_dataset v{ENCODING_FINGERPRINT_VERSION}\n".encode())
    for part in (
        str(getattr(dataset, "_fingerprint", None)),
        tokenizer_fingerprint(encoder.tokenizer),
        _stable_json(settings),
        _stable_json(kwargs),
    ):
        h.update(part.encode() + b"\n")
    h.update(hashlib.sha256(_encoding_sources()).digest())
    return h.hexdigest()[:32]


def encode_dataset(dataset: Any, encoder: ReasoningTraceEncoder, **map_kwargs: Any) -> tuple[Any, TraceStats]:
    """Map ``dataset`` with ``encoder`` (batched), count cases, drop refused rows.

    ``map_kwargs`` go to ``Dataset.map`` (``num_proc``, ``batch_size``…). Returns the encoded
    dataset (original columns removed, ``trace_flags`` kept) and the :class:`TraceStats`. A
    ``datasets.Dataset`` is given :func:`encoding_fingerprint` as its new fingerprint unless
    ``new_fingerprint`` is passed.
    """
    if "new_fingerprint" not in map_kwargs and isinstance(getattr(dataset, "_fingerprint", None), str):
        map_kwargs["new_fingerprint"] = encoding_fingerprint(dataset, encoder, **map_kwargs)
    encoded = dataset.map(encoder, batched=True, remove_columns=dataset.column_names, **map_kwargs)
    stats = TraceStats.from_flags(encoded["trace_flags"])
    if stats.counts["dropped"]:
        dropped = CASE_BITS["dropped"]
        encoded = encoded.filter(
            lambda flags: [not f & dropped for f in flags], input_columns="trace_flags", batched=True
        )
    return encoded, stats
