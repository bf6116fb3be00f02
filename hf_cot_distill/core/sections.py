"""Section ids: the one currency every stage of the pipeline carries beside ``input_ids``.

Every token of a training sequence belongs to exactly one section:

* ``PAD``    (0) padding; never supervised.
* ``PROMPT`` (1) the question / context / in-context inputs.
* ``COT``    (2) the chain of thought (reasoning).
* ``ANSWER`` (3) the final answer.

Marker tokens belong to the section they open or close: an opening marker (``<think>``,
``[think_start]``) is the first token of the section it opens and a closing marker
(``</think>``, ``[answer_end]``) the last token of the section it closes. A sequence-level
``bos`` belongs to ``PROMPT``; an ``eos`` that ends an example belongs to ``ANSWER``.

Chat-rendered text (decided here, tested in ``tests/test_sections.py``)::

    <|im_start|>user\\n ... <|im_end|>\\n<|im_start|>assistant\\n  <think>\\n ... \\n</think>  \\n\\n answer <|im_end|>
    '----------------------- PROMPT ---------------------------'  '-------- COT ---------'  '------- ANSWER -------'

* The assistant header (``<|im_start|>assistant\\n``, i.e. what ``add_generation_prompt=True``
  appends) is ``PROMPT``: at inference it is given, never generated.
* ``<think>`` opens ``COT`` and ``</think>`` closes it; the whitespace inside belongs to ``COT``.
* Everything after ``</think>`` up to and including the end-of-turn marker (``<|im_end|>``) is
  ``ANSWER``: the model must learn to stop. Template text after the end-of-turn marker of a
  supervised turn is ``PROMPT`` (it precedes the next turn) or, after the last one, not rendered.

Section ids come from **character spans** over the rendered text mapped through the fast
tokenizer's ``offset_mapping`` (:func:`section_ids_from_offsets`), never from searching token
ids. A token takes the section of its first character (its offset start); so a BPE token that
straddles a boundary (e.g. ``">\\n\\n"`` after a multi-token ``</think>``) belongs to the section
where it starts, which keeps sections contiguous and in text order.

Section ids are stored as small integers (``int8`` in datasets, ``torch.long`` in batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np

from hf_cot_distill.core.validation import check_int_array


class Section(IntEnum):
    """Per-token section id. Values are stable: they are written to datasets."""

    PAD = 0
    PROMPT = 1
    COT = 2
    ANSWER = 3


SECTION_NAMES: dict[int, str] = {int(s): s.name.lower() for s in Section}
NUM_SECTIONS: int = len(Section)
#: The sections a token can be supervised in, by name, in text order (all but ``pad``): the keys of
#: per-section settings, logs (``tokens_kd/cot``) and card tables.
CONTENT_SECTION_NAMES: tuple[str, ...] = tuple(SECTION_NAMES[int(s)] for s in Section if s is not Section.PAD)


class CharSpan(NamedTuple):
    """A half-open character range ``[start, end)`` of a rendered text and its section."""

    start: int
    end: int
    section: Section


def section_ids_from_offsets(
    offsets: Sequence[Sequence[int]] | np.ndarray,
    spans: Sequence[CharSpan],
    text_length: int,
    *,
    default: Section = Section.PROMPT,
) -> np.ndarray:
    """Map character spans to per-token section ids through a tokenizer offset mapping.

    Args:
        offsets: ``(T, 2)`` ints, the fast tokenizer's ``offset_mapping`` (char start, end).
        spans: non-overlapping character spans; later spans win where they overlap.
        text_length: length in characters of the tokenized text.
        default: section of characters covered by no span (template glue, user turns).

    Returns:
        ``(T,)`` ``int8`` section ids; token ``t`` gets the section of character
        ``offsets[t, 0]`` (its first character; clipped to the text for empty offsets at the end).
    """
    char_sections = np.full(max(text_length, 1), int(default), dtype=np.int8)
    for span in spans:
        if not 0 <= span.start <= span.end <= text_length:
            raise ValueError(
                f"spans: span {tuple(span)} lies outside the text of length {text_length}; "
                "fix: build spans from the same rendered text that was tokenized."
            )
        char_sections[span.start : span.end] = int(span.section)
    starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
    return char_sections[np.clip(starts, 0, len(char_sections) - 1)]


def require_fast_tokenizer(tokenizer: Any) -> None:
    """Raise ``ValueError`` unless ``tokenizer`` can return offset mappings (a fast tokenizer)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer: {type(tokenizer).__name__} is not a fast tokenizer, so it has no "
            "offset_mapping to place section boundaries; fix: load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) (a tokenizer.json backed tokenizer)."
        )


def tokenize_with_sections(
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[CharSpan]],
) -> tuple[list[list[int]], list[list[int]]]:
    """Tokenize a batch of rendered texts in **one** fast-tokenizer call and map spans to ids.

    No special tokens are added (chat templates already render them). Texts are not truncated
    here: length limits are a truncation policy's job, which reports what it cut.

    Returns:
        ``(input_ids, section_ids)``: per text, equal-length lists of ints.
    """
    require_fast_tokenizer(tokenizer)
    if len(texts) != len(spans):
        raise ValueError(f"spans: got {len(spans)} span lists for {len(texts)} texts; fix: one per text.")
    if not texts:
        return [], []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    section_ids = [
        section_ids_from_offsets(offsets, text_spans, len(text)).tolist()
        for offsets, text_spans, text in zip(enc["offset_mapping"], spans, texts)
    ]
    return [list(ids) for ids in enc["input_ids"]], section_ids


def section_runs(section_ids: Sequence[int] | np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs of equal section id as ``(section, start, end)`` with ``end`` exclusive."""
    ids = np.asarray(section_ids)
    if ids.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [ids.size]])
    return [(int(ids[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def section_counts(section_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(NUM_SECTIONS,)`` ``int64`` token counts per section id."""
    ids = check_int_array("section_ids", section_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= NUM_SECTIONS):
        raise ValueError(
            f"section_ids: values must lie in 0..{NUM_SECTIONS - 1}, got min {ids.min()} max {ids.max()}; "
            "fix: use hf_cot_distill.core.sections.Section values."
        )
    return np.bincount(ids, minlength=NUM_SECTIONS).astype(np.int64)
