"""Public reasoning-trace layouts -> one canonical sample -> token ids + section ids.

Layouts (``FORMAT_ADAPTERS``; each maps one dataset row to a :class:`ReasoningSample`):

* ``"messages"``: chat ``messages`` (``role``/``content``); the assistant content holds
  ``<think>…</think>`` inline, or the message has a separate ``reasoning_content`` field.
* ``"conversations"``: ``conversations`` with ``from``/``value`` (OpenThoughts / Bespoke:
  ``<|begin_of_thought|>…<|end_of_thought|>`` ``<|begin_of_solution|>…<|end_of_solution|>``),
  optional top-level ``system``.
* ``"prompt_completion"``: ``prompt`` and ``completion`` (strings, or TRL-style message lists).
* ``"reasoning_content"``: R1 style, ``prompt`` + ``reasoning_content`` + ``content`` fields.

Markers are data (:class:`TraceMarkers`, presets in ``MARKER_PRESETS``): the markers a source
uses to *parse* it and the markers the model is *trained* with are chosen separately.

Bad input, each with a rule (``TRACE_CASES`` names; counted in :class:`TraceStats`):

========================== =====================================================================
case                       rule
========================== =====================================================================
missing_open_marker        handled: text before the closing marker is the CoT (R1 outputs whose
                           template already emitted ``<think>``)
missing_close_marker       refused: the trace was cut before its answer
malformed_markers          refused: closing before opening, or a marker repeated
text_before_cot            refused ("answer before CoT"): non-blank text before the opening marker
empty_cot                  handled by ``on_empty_cot="empty_block"`` (an empty think block whose
                           markers are the only COT tokens, Qwen3's non-thinking form) or refused
multiple_assistant_turns   handled: ``turn_policy`` "last" (earlier turns are PROMPT) or "all"
reasoning_not_rendered     handled: the chat template dropped a turn's reasoning (Qwen3 does for
                           turns before the last user query); that turn is supervised as ANSWER
no_final_assistant_turn    refused: nothing to supervise at the end of the conversation
too_long                   ``on_too_long`` "refuse" or "keep" (a truncation policy cuts it later
                           and reports what it cut)
========================== =====================================================================

Refusals raise :class:`TraceError` (a ``ValueError`` naming field, value and fix); with
``on_invalid="drop"`` the encoder keeps the row with empty ids and its flags instead, so the
counts survive ``Dataset.map(num_proc=…)``; :func:`encode_dataset` then filters those rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hf_cot_distill.sections import CharSpan, Section, require_fast_tokenizer, tokenize_with_sections

TRACE_CASES: tuple[str, ...] = (
    "missing_open_marker",
    "missing_close_marker",
    "malformed_markers",
    "text_before_cot",
    "empty_cot",
    "multiple_assistant_turns",
    "reasoning_not_rendered",
    "no_final_assistant_turn",
    "too_long",
    "dropped",
)
CASE_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(TRACE_CASES)}


class TraceError(ValueError):
    """A refused sample; ``case`` is one of ``TRACE_CASES``."""

    def __init__(self, case: str, message: str) -> None:
        super().__init__(message)
        self.case = case


@dataclass(frozen=True)
class TraceMarkers:
    """Strings that delimit the reasoning (and optionally the solution) in assistant text."""

    think_open: str = "<think>"
    think_close: str = "</think>"
    solution_open: str | None = None
    solution_close: str | None = None


MARKER_PRESETS: dict[str, TraceMarkers] = {
    "think": TraceMarkers(),
    "openthoughts": TraceMarkers(
        "<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>"
    ),
}


@dataclass(frozen=True)
class Turn:
    """One message. For ``role == "assistant"``: ``content`` is the answer text and ``reasoning``
    the CoT text (``""`` = empty CoT); for other roles ``reasoning`` is ``None``."""

    role: str
    content: str
    reasoning: str | None = None


@dataclass(frozen=True)
class ReasoningSample:
    """The canonical sample: prompt messages, then assistant turns with reasoning and answer."""

    turns: tuple[Turn, ...]
    flags: int = 0  # OR of CASE_BITS handled while parsing

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Messages before the last turn (the prompt of the last assistant turn)."""
        return [{"role": t.role, "content": t.content} for t in self.turns[:-1]]

    @property
    def reasoning(self) -> str:
        """Reasoning text of the last turn."""
        return self.turns[-1].reasoning or ""

    @property
    def answer(self) -> str:
        """Answer text of the last turn."""
        return self.turns[-1].content


def split_reasoning(text: str, markers: TraceMarkers, field_name: str = "content") -> tuple[str, str, int]:
    """Split assistant text into ``(reasoning, answer, flags)`` by ``markers`` (stripped)."""
    opens, closes = text.count(markers.think_open), text.count(markers.think_close)
    if opens == 0 and closes == 0:
        return "", text.strip(), CASE_BITS["empty_cot"]
    fix = f"fix: check the source markers ({markers.think_open!r}/{markers.think_close!r}) or clean the row."
    if opens > 1 or closes > 1:
        raise TraceError("malformed_markers", f"{field_name}: markers repeated in {text[:80]!r}; {fix}")
    if closes == 0:
        raise TraceError(
            "missing_close_marker", f"{field_name}: no {markers.think_close!r} in {text[:80]!r}…; {fix}"
        )
    flags = 0
    close_at = text.index(markers.think_close)
    if opens == 0:
        flags |= CASE_BITS["missing_open_marker"]
        open_end = 0
    else:
        open_at = text.index(markers.think_open)
        if open_at > close_at:
            raise TraceError("malformed_markers", f"{field_name}: closing before opening marker; {fix}")
        if text[:open_at].strip():
            raise TraceError(
                "text_before_cot",
                f"{field_name}: text {text[:open_at][:60]!r} before {markers.think_open!r} "
                f"(answer before CoT?); fix: move it after {markers.think_close!r} or drop the row.",
            )
        open_end = open_at + len(markers.think_open)
    reasoning = text[open_end:close_at].strip()
    answer = text[close_at + len(markers.think_close) :]
    if markers.solution_open is not None and markers.solution_open in answer:
        answer = answer.split(markers.solution_open, 1)[1]
        if markers.solution_close is not None:
            answer = answer.split(markers.solution_close, 1)[0]
    if not reasoning:
        flags |= CASE_BITS["empty_cot"]
    return reasoning, answer.strip(), flags


def _sample_from_messages(
    messages: Sequence[Mapping[str, Any]],
    markers: TraceMarkers,
    role_key: str = "role",
    content_key: str = "content",
    role_map: Mapping[str, str] | None = None,
) -> ReasoningSample:
    turns: list[Turn] = []
    flags = 0
    for i, message in enumerate(messages):
        role = str(message[role_key])
        role = (role_map or {}).get(role, role)
        content = str(message[content_key] or "")
        if role != "assistant":
            turns.append(Turn(role, content))
            continue
        if message.get("reasoning_content") is not None:
            reasoning, answer = str(message["reasoning_content"]).strip(), content.strip()
            turn_flags = 0 if reasoning else CASE_BITS["empty_cot"]
        else:
            reasoning, answer, turn_flags = split_reasoning(content, markers, f"messages[{i}].{content_key}")
        turns.append(Turn("assistant", answer, reasoning))
        flags |= turn_flags
    if not turns or turns[-1].role != "assistant":
        raise TraceError(
            "no_final_assistant_turn",
            f"messages: the last message has role {turns[-1].role if turns else None!r}; "
            "fix: end each conversation with the assistant turn to supervise, or drop the row.",
        )
    if sum(t.role == "assistant" for t in turns) > 1:
        flags |= CASE_BITS["multiple_assistant_turns"]
    return ReasoningSample(tuple(turns), flags)


def from_messages(row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["think"]) -> ReasoningSample:
    """Adapter for chat ``messages`` rows (``<think>`` inline or ``reasoning_content`` per message)."""
    return _sample_from_messages(row["messages"], markers)


CONVERSATION_ROLES: dict[str, str] = {"human": "user", "gpt": "assistant", "user": "user", "system": "system"}


def from_conversations(
    row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["openthoughts"]
) -> ReasoningSample:
    """Adapter for ``conversations`` rows with ``from``/``value`` and an optional ``system`` field."""
    messages = list(row["conversations"])
    if row.get("system"):
        messages = [{"from": "system", "value": row["system"]}, *messages]
    return _sample_from_messages(messages, markers, "from", "value", CONVERSATION_ROLES)


def _as_messages(value: Any, role: str) -> list[Mapping[str, Any]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def from_prompt_completion(
    row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["think"]
) -> ReasoningSample:
    """Adapter for ``prompt``/``completion`` rows (plain strings or TRL conversational lists)."""
    messages = _as_messages(row["prompt"], "user") + _as_messages(row["completion"], "assistant")
    return _sample_from_messages(messages, markers)


def from_reasoning_content(
    row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["think"]
) -> ReasoningSample:
    """Adapter for R1-style rows: ``prompt`` + ``reasoning_content`` + ``content``."""
    assistant = {
        "role": "assistant",
        "content": row["content"],
        "reasoning_content": row["reasoning_content"],
    }
    return _sample_from_messages([*_as_messages(row["prompt"], "user"), assistant], markers)


FORMAT_ADAPTERS: dict[str, Callable[..., ReasoningSample]] = {
    "messages": from_messages,
    "conversations": from_conversations,
    "prompt_completion": from_prompt_completion,
    "reasoning_content": from_reasoning_content,
}


def detect_format(column_names: Sequence[str]) -> str:
    """Name of the ``FORMAT_ADAPTERS`` layout a dataset with these columns uses."""
    columns = set(column_names)
    for name, needed in (
        ("messages", {"messages"}),
        ("conversations", {"conversations"}),
        ("reasoning_content", {"prompt", "reasoning_content", "content"}),
        ("prompt_completion", {"prompt", "completion"}),
    ):
        if needed <= columns:
            return name
    raise ValueError(
        f"column_names: {sorted(columns)} match no layout in {sorted(FORMAT_ADAPTERS)}; "
        "fix: rename the columns or pass source_format explicitly."
    )


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
            ("on_too_long", self.on_too_long, ("refuse", "keep")),
            ("on_empty_cot", self.on_empty_cot, ("empty_block", "refuse")),
            ("on_invalid", self.on_invalid, ("raise", "drop")),
        ):
            if value not in allowed:
                raise ValueError(f"{name}: {value!r} not allowed; fix: one of {allowed}.")

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
