"""Public reasoning-trace layouts -> one canonical sample -> token ids + section ids.

Layouts (``FORMAT_ADAPTERS``; each maps one dataset row to a :class:`ReasoningSample`):

* ``"messages"``: chat ``messages`` (``role``/``content``); the assistant content holds
  ``<think>…</think>`` inline, or the message has a separate ``reasoning_content`` field.
  A content may be a string or a list of text parts (``[{"type": "text", "text": …}]``, TRL /
  OpenAI style: the texts are joined); any other part is refused (``malformed_row``).
* ``"conversations"``: ``conversations`` with ``from``/``value`` (OpenThoughts / Bespoke:
  ``<|begin_of_thought|>…<|end_of_thought|>`` ``<|begin_of_solution|>…<|end_of_solution|>``),
  optional top-level ``system``.
* ``"prompt_completion"``: ``prompt`` and ``completion`` (strings, or TRL-style message lists).
* ``"reasoning_content"``: R1 style, ``prompt`` + ``reasoning_content`` + ``content`` fields.

Markers are data (:class:`TraceMarkers`, presets in ``MARKER_PRESETS``): the markers a source
uses to *parse* it and the markers the model is *trained* with are chosen separately. The
``"symbolic"`` preset reads and writes the symbolic tasks' headers (``### Reasoning`` … then
``### Answer`` and ``\\boxed{…}``, :mod:`hf_cot_distill.data.synthetic.symbolic`): the closing marker opens the
answer, so the reasoning block is COT and ``### Answer …`` is ANSWER, and an answer without
reasoning (a direct example) is valid. ``"symbolic_paper"`` does the same for the paper rendering of
those tasks (``render: paper``: ``<|im_start|>think`` … ``<|im_start|>final answer``).

Bad input, each with a rule (``TRACE_CASES`` names; counted in :class:`TraceStats`):

========================== =====================================================================
case                       rule
========================== =====================================================================
missing_open_marker        handled: text before the closing marker is the CoT (R1 outputs whose
                           template already emitted ``<think>``)
missing_close_marker       refused: the trace was cut before its answer
malformed_markers          refused: closing before opening, or a marker repeated
text_before_cot            refused ("answer before CoT"): non-blank text before the opening marker
empty_cot                  a supervised turn without CoT: ``on_empty_cot`` "empty_block" (an empty
                           think block whose markers are the only COT tokens, Qwen3's non-thinking
                           form), "as_given" (no block: the turn is ANSWER) or "refuse"; turns that
                           are not supervised are rendered as given (no block is added)
multiple_assistant_turns   handled: ``turn_policy`` "last" (earlier turns are PROMPT) or "all"
reasoning_not_rendered     handled: the chat template dropped a turn's reasoning (Qwen3 does for
                           turns before the last user query); that turn is supervised as ANSWER
no_final_assistant_turn    refused: nothing to supervise at the end of the conversation
too_long                   ``on_too_long`` "refuse" or "keep" (a truncation policy cuts it later
                           and reports what it cut)
malformed_row              refused: a message without a ``str`` role, without content, with
                           content that is neither text nor a list of text parts, or a layout field
                           of the wrong type
empty_answer               ``on_empty_answer`` "refuse" (a trace cut right after its CoT: nothing
                           after the closing marker) or "keep" (the ANSWER is the end of turn)
========================== =====================================================================

Refusals raise :class:`TraceError` (a ``ValueError`` naming field, value and fix); with
``on_invalid="drop"`` the encoder keeps the row with empty ids and its flags instead, so the
counts survive ``Dataset.map(num_proc=…)``; :func:`encode_dataset` then filters those rows.

Rendering and encoding (``render_sample``, ``ReasoningTraceEncoder``, ``TraceStats``,
``encode_dataset``) live in :mod:`hf_cot_distill.data.traces.encoding`, which imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hf_cot_distill.core.validation import check_bool

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
    # Appended after "dropped" so that the bits of the older cases do not move.
    "malformed_row",
    "empty_answer",
)
CASE_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(TRACE_CASES)}


class TraceError(ValueError):
    """A refused sample; ``case`` is one of ``TRACE_CASES``."""

    def __init__(self, case: str, message: str) -> None:
        super().__init__(message)
        self.case = case


@dataclass(frozen=True)
class TraceMarkers:
    """Strings that delimit the reasoning (and optionally the solution) in assistant text.

    Rendered, a turn reads ``think_open \\n reasoning \\n think_close answer_separator answer``.
    ``close_opens_answer``: ``think_close`` is the answer's header (``### Answer``), not the end
    of a think block: it belongs to the ANSWER, every answer carries it, and an answer without
    the opening marker is a direct answer (no CoT) rather than a ``missing_open_marker``.
    """

    think_open: str = "<think>"
    think_close: str = "</think>"
    solution_open: str | None = None
    solution_close: str | None = None
    answer_separator: str = "\n\n"
    close_opens_answer: bool = False

    def __post_init__(self) -> None:
        for name in ("think_open", "think_close"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"TraceMarkers.{name}={value!r}: must be a non-blank string; fix: pass the marker text."
                )
        for name in ("solution_open", "solution_close"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(
                    f"TraceMarkers.{name}={value!r}: must be None or a non-blank string; fix: pass the marker text."
                )
        if not isinstance(self.answer_separator, str):
            raise ValueError(
                f"TraceMarkers.answer_separator={self.answer_separator!r}: must be a string; fix: e.g. '\\n\\n'."
            )
        check_bool("TraceMarkers.close_opens_answer", self.close_opens_answer)


MARKER_PRESETS: dict[str, TraceMarkers] = {
    "think": TraceMarkers(),
    "openthoughts": TraceMarkers(
        "<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>"
    ),
    # SymbolicConfig's default think_header / answer_header, as render_answer writes them.
    "symbolic": TraceMarkers("### Reasoning", "### Answer", answer_separator="\n", close_opens_answer=True),
    # The same tasks rendered as the CoT-Recipe code renders them (SymbolicConfig(render="paper")):
    # PAPER_THINK_HEADER / PAPER_ANSWER_HEADER, whose <|im_start|> is one special token in Qwen vocabularies.
    "symbolic_paper": TraceMarkers(
        "<|im_start|>think", "<|im_start|>final answer", answer_separator="\n", close_opens_answer=True
    ),
}


@dataclass(frozen=True)
class Turn:
    """One message. For ``role == "assistant"``: ``content`` is the answer text and ``reasoning``
    the CoT text (``""`` = an empty think block, ``None`` = the source has no think block); for
    other roles ``reasoning`` is ``None``."""

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


def split_reasoning(
    text: str, markers: TraceMarkers, field_name: str = "content"
) -> tuple[str | None, str, int]:
    """Split assistant text into ``(reasoning, answer, flags)`` by ``markers`` (stripped).

    ``reasoning`` is ``None`` when the text has no think block (a direct answer).
    """
    opens, closes = text.count(markers.think_open), text.count(markers.think_close)
    fix = f"fix: check the source markers ({markers.think_open!r}/{markers.think_close!r}) or clean the row."
    if opens == 0 and closes == 0:
        if markers.close_opens_answer:
            raise TraceError(
                "missing_close_marker",
                f"{field_name}: no answer header {markers.think_close!r} in {text[:80]!r}…; {fix}",
            )
        return None, text.strip(), CASE_BITS["empty_cot"]
    if opens > 1 or closes > 1:
        raise TraceError("malformed_markers", f"{field_name}: markers repeated in {text[:80]!r}; {fix}")
    if closes == 0:
        raise TraceError(
            "missing_close_marker", f"{field_name}: no {markers.think_close!r} in {text[:80]!r}…; {fix}"
        )
    flags = 0
    close_at = text.index(markers.think_close)
    if opens == 0 and markers.close_opens_answer:
        if text[:close_at].strip():
            raise TraceError(
                "text_before_cot",
                f"{field_name}: text {text[:close_at][:60]!r} before the answer header {markers.think_close!r} "
                f"and no {markers.think_open!r}; {fix}",
            )
        reasoning: str | None = None
    elif opens == 0:
        flags |= CASE_BITS["missing_open_marker"]
        reasoning = text[:close_at].strip()
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
        reasoning = text[open_at + len(markers.think_open) : close_at].strip()
    answer = text[close_at + len(markers.think_close) :]
    if markers.solution_open is not None and markers.solution_open in answer:
        answer = answer.split(markers.solution_open, 1)[1]
        if markers.solution_close is not None:
            answer = answer.split(markers.solution_close, 1)[0]
    if not reasoning:
        flags |= CASE_BITS["empty_cot"]
    return reasoning, answer.strip(), flags


def _malformed(where: str, problem: str, fix: str = "fix the row or drop it") -> TraceError:
    return TraceError("malformed_row", f"{where}: {problem}; fix: {fix}.")


def _text_content(value: Any, where: str) -> str:
    """A message content as text: a string, ``None`` (empty), or a list of text parts joined
    (``[{"type": "text", "text": …}]``, TRL / OpenAI style). Anything else is a ``malformed_row``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        raise _malformed(where, f"content of type {type(value).__name__} ({value!r:.60})", "pass a string")
    texts = []
    for j, part in enumerate(value):
        if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            continue
        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
        raise _malformed(
            f"{where}[{j}]",
            f"a {kind!r} part ({part!r:.60}); only text parts {{'type': 'text', 'text': str}} render as text",
            "remove the non-text parts or drop the row",
        )
    return "".join(texts)


def _as_messages(value: Any, role: str, where: str) -> list[Any]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, Sequence):
        return list(value)
    raise _malformed(where, f"{type(value).__name__} ({value!r:.60}) is not a string or a list of messages")


def _sample_from_messages(
    messages: Any,
    markers: TraceMarkers,
    role_key: str = "role",
    content_key: str = "content",
    role_map: Mapping[str, str] | None = None,
    field_name: str = "messages",
) -> ReasoningSample:
    if isinstance(messages, str) or not isinstance(messages, Sequence):
        raise _malformed(
            field_name, f"{type(messages).__name__} ({messages!r:.60}) is not a list of messages"
        )
    turns: list[Turn] = []
    flags = 0
    for i, message in enumerate(messages):
        where = f"{field_name}[{i}]"
        if not isinstance(message, Mapping):
            raise _malformed(where, f"{type(message).__name__} ({message!r:.60}) is not a mapping")
        role = message.get(role_key)
        if not isinstance(role, str):
            raise _malformed(
                where,
                f"{role_key!r} is {role!r}, not a string (keys: {sorted(message)})",
                f"give every message a {role_key!r} such as 'user' or 'assistant'",
            )
        if content_key not in message:
            raise _malformed(where, f"no {content_key!r} key (keys: {sorted(message)})")
        role = (role_map or {}).get(role, role)
        content = _text_content(message[content_key], f"{where}.{content_key}")
        if role != "assistant":
            turns.append(Turn(role, content))
            continue
        if message.get("reasoning_content") is not None:
            reasoning = _text_content(message["reasoning_content"], f"{where}.reasoning_content").strip()
            answer = content.strip()
            turn_flags = 0 if reasoning else CASE_BITS["empty_cot"]
        else:
            reasoning, answer, turn_flags = split_reasoning(content, markers, f"{where}.{content_key}")
        turns.append(Turn("assistant", answer, reasoning))
        flags |= turn_flags
    if not turns or turns[-1].role != "assistant":
        raise TraceError(
            "no_final_assistant_turn",
            f"{field_name}: the last message has role {turns[-1].role if turns else None!r}; "
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
    messages = row["conversations"]
    if row.get("system"):
        if isinstance(messages, str) or not isinstance(messages, Sequence):
            raise _malformed("conversations", f"{type(messages).__name__} is not a list of messages")
        messages = [{"from": "system", "value": row["system"]}, *messages]
    return _sample_from_messages(messages, markers, "from", "value", CONVERSATION_ROLES, "conversations")


def from_prompt_completion(
    row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["think"]
) -> ReasoningSample:
    """Adapter for ``prompt``/``completion`` rows (plain strings or TRL conversational lists)."""
    prompt = _as_messages(row["prompt"], "user", "prompt")
    messages = prompt + _as_messages(row["completion"], "assistant", "completion")
    return _sample_from_messages(messages, markers, field_name="prompt+completion")


def from_reasoning_content(
    row: Mapping[str, Any], markers: TraceMarkers = MARKER_PRESETS["think"]
) -> ReasoningSample:
    """Adapter for R1-style rows: ``prompt`` + ``reasoning_content`` + ``content``."""
    assistant = {
        "role": "assistant",
        "content": row["content"],
        "reasoning_content": row["reasoning_content"],
    }
    messages = [*_as_messages(row["prompt"], "user", "prompt"), assistant]
    return _sample_from_messages(messages, markers, field_name="prompt+content")


FORMAT_ADAPTERS: dict[str, Callable[..., ReasoningSample]] = {
    "messages": from_messages,
    "conversations": from_conversations,
    "prompt_completion": from_prompt_completion,
    "reasoning_content": from_reasoning_content,
}


# Columns each layout needs, in detection order (reasoning_content before prompt_completion).
FORMAT_COLUMNS: dict[str, frozenset[str]] = {
    "messages": frozenset({"messages"}),
    "conversations": frozenset({"conversations"}),
    "reasoning_content": frozenset({"prompt", "reasoning_content", "content"}),
    "prompt_completion": frozenset({"prompt", "completion"}),
}


def detect_format(column_names: Sequence[str]) -> str:
    """Name of the ``FORMAT_ADAPTERS`` layout a dataset with these columns uses."""
    columns = set(column_names)
    for name, needed in FORMAT_COLUMNS.items():
        if needed <= columns:
            return name
    raise ValueError(
        f"column_names: {sorted(columns)} match no layout in {sorted(FORMAT_ADAPTERS)}; "
        "fix: rename the columns or pass source_format explicitly."
    )
