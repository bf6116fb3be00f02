"""Prompt strategies: how a task's examples become ``input_ids``, ``labels`` and section ids.

Each strategy is a small class that only declares the *layout* of one example: a list of
columns, each an input token, a chain token or a special marker, with its section, whether it
is supervised, and whether it belongs to the droppable think block. One vectorised renderer
turns a batch of same-shape tasks plus per-example "carries its CoT" flags into flat token
arrays (ragged rows given by offsets), the training view and the eval view in one pass.

Layouts (``x`` inputs, ``c`` CoT chain tokens, ``a`` the answer = last chain token):

=========================  ==========================================================================
``standard``               ``x.. a``                                      labels on ``a``
``cot``                    ``x.. c.. a``                                  labels on ``c.. a``
``standard_special_token`` ``<bos>`` then ``<in> x.. </in> <ans> a </ans> <eos>``  labels after ``</in>``
``cot_special_token``      ``<bos>`` then ``<in> x.. </in> <think> c.. </think> <ans> a </ans> <eos>``
``hybrid_special_token``   per example, the ``cot_special_token`` layout with or without the think block
=========================  ==========================================================================

Sections: inputs and their markers are PROMPT (also ``<bos>``), ``<think> c.. </think>`` is COT
(plain ``cot``: the chain tokens but the last), ``<ans> a </ans> <eos>`` is ANSWER.
The eval view is the context (all examples but the last, plus the last one's PROMPT columns)
and the target (the last example's supervised tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_cot_distill.core.sections import Section
from hf_cot_distill.core.validation import check_choice
from hf_cot_distill.data.synthetic.cot_icl_lab import SpecialTokens

IGNORE_INDEX = -100
# Column kinds in a layout.
_INPUT, _CHAIN, _MARKER = 0, 1, 2


@dataclass(frozen=True)
class Column:
    kind: int  # _INPUT, _CHAIN or _MARKER
    value: int  # input position, chain position, or the marker id
    section: Section
    supervised: bool
    think: bool = False  # part of the think block (dropped when the example has no CoT)


class PromptStrategy:
    """Base class: subclasses declare the example layout and whether examples carry CoT."""

    name: str = ""
    uses_special_tokens: bool = False
    carries_cot: bool = False  # examples carry their CoT (hybrid: decided per example)
    per_example_cot: bool = False

    def example_layout(self, n_inputs: int, chain_length: int, st: SpecialTokens | None) -> list[Column]:
        raise NotImplementedError

    def prefix(self, st: SpecialTokens | None) -> list[Column]:
        """Columns before the first example (``<bos>`` for special-token strategies)."""
        if st is None:
            return []
        return [Column(_MARKER, st.bos, Section.PROMPT, False)]


def _inputs(n: int) -> list[Column]:
    return [Column(_INPUT, i, Section.PROMPT, False) for i in range(n)]


def _cot(chain_length: int) -> list[Column]:
    return [Column(_CHAIN, j, Section.COT, True, think=True) for j in range(chain_length - 1)]


def _special_example(n: int, c: int, st: SpecialTokens, with_think: bool) -> list[Column]:
    cols = [Column(_MARKER, st.input_start, Section.PROMPT, False), *_inputs(n)]
    cols.append(Column(_MARKER, st.input_end, Section.PROMPT, False))
    if with_think:
        cols.append(Column(_MARKER, st.think_start, Section.COT, True, think=True))
        cols.extend(_cot(c))
        cols.append(Column(_MARKER, st.think_end, Section.COT, True, think=True))
    cols.append(Column(_MARKER, st.answer_start, Section.ANSWER, True))
    cols.append(Column(_CHAIN, c - 1, Section.ANSWER, True))
    cols.append(Column(_MARKER, st.answer_end, Section.ANSWER, True))
    cols.append(Column(_MARKER, st.eos, Section.ANSWER, True))
    return cols


class StandardPrompt(PromptStrategy):
    name = "standard"

    def example_layout(self, n_inputs, chain_length, st):
        return [*_inputs(n_inputs), Column(_CHAIN, chain_length - 1, Section.ANSWER, True)]


class CoTPrompt(PromptStrategy):
    name = "cot"
    carries_cot = True

    def example_layout(self, n_inputs, chain_length, st):
        answer = Column(_CHAIN, chain_length - 1, Section.ANSWER, True)
        return [*_inputs(n_inputs), *_cot(chain_length), answer]


class StandardSpecialTokenPrompt(PromptStrategy):
    name = "standard_special_token"
    uses_special_tokens = True

    def example_layout(self, n_inputs, chain_length, st):
        return _special_example(n_inputs, chain_length, st, with_think=False)


class CoTSpecialTokenPrompt(PromptStrategy):
    name = "cot_special_token"
    uses_special_tokens = True
    carries_cot = True

    def example_layout(self, n_inputs, chain_length, st):
        return _special_example(n_inputs, chain_length, st, with_think=True)


class HybridSpecialTokenPrompt(CoTSpecialTokenPrompt):
    name = "hybrid_special_token"
    per_example_cot = True


STRATEGIES: dict[str, PromptStrategy] = {
    s.name: s
    for s in (
        StandardPrompt(),
        CoTPrompt(),
        StandardSpecialTokenPrompt(),
        CoTSpecialTokenPrompt(),
        HybridSpecialTokenPrompt(),
    )
}


def get_strategy(name: str) -> PromptStrategy:
    return STRATEGIES[check_choice("prompt_strategy", name, sorted(STRATEGIES))]


@dataclass
class Ragged:
    """Rows of different lengths: ``values[offsets[i]:offsets[i+1]]`` is row ``i``."""

    values: np.ndarray
    offsets: np.ndarray  # (T + 1,) int64

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass
class Rendered:
    """A batch of rendered tasks (all ragged over tasks).

    ``input_ids``/``labels``/``section_ids`` are the training view; ``eval_input_ids`` the
    eval context (no labels) and ``eval_target_ids`` the last example's supervised tokens.
    """

    input_ids: Ragged
    labels: Ragged
    section_ids: Ragged
    eval_input_ids: Ragged
    eval_target_ids: Ragged


def _ragged(full: np.ndarray, keep: np.ndarray) -> Ragged:
    counts = keep.sum(axis=1)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Ragged(full[keep], offsets)


def render(
    strategy: PromptStrategy,
    tokens: np.ndarray,
    n_inputs: int,
    has_cot: np.ndarray,
    st: SpecialTokens | None,
    eval_has_cot: np.ndarray | None = None,
) -> Rendered:
    """Render a group of same-shape tasks.

    Args:
        strategy: the prompt strategy.
        tokens: int64 ``(T, K, N + C)``: each example's inputs then its chain.
        n_inputs: ``N``.
        has_cot: bool ``(T, K)``: which examples carry their think block in training.
        st: the special tokens (``None`` for plain strategies).
        eval_has_cot: bool ``(T, K)`` flags for the eval context (e.g. after drop-k);
            defaults to ``has_cot``.
    Returns:
        ``Rendered`` with ragged int64 rows (section ids as int8).
    """
    if strategy.uses_special_tokens != (st is not None):
        raise ValueError(
            f"prompt strategy {strategy.name!r} {'needs' if strategy.uses_special_tokens else 'takes no'} "
            "special tokens; build it from a CoTICLConfig with the same prompt_strategy."
        )
    t, k, width = tokens.shape
    n = n_inputs
    c = width - n
    if c < 1:
        raise ValueError(f"tokens have width {width} but n_inputs={n}: no chain tokens to render.")
    layout = strategy.example_layout(n, c, st)
    prefix = strategy.prefix(st)
    ex_len, pre_len = len(layout), len(prefix)

    kind = np.array([col.kind for col in layout])
    value = np.array([col.value for col in layout])
    src = np.where(kind == _INPUT, value, np.where(kind == _CHAIN, n + value, 0))
    example = np.where(kind == _MARKER, value, tokens[:, :, src])  # (T, K, ex_len)
    sup = np.array([col.supervised for col in layout])
    sec = np.array([int(col.section) for col in layout], dtype=np.int8)
    think = np.array([col.think for col in layout])
    prompt_col = sec == int(Section.PROMPT)

    pre_ids = np.array([col.value for col in prefix], dtype=np.int64)
    pre_sec = np.array([int(col.section) for col in prefix], dtype=np.int8)
    ids = np.concatenate([np.broadcast_to(pre_ids, (t, pre_len)), example.reshape(t, k * ex_len)], axis=1)
    labels = np.concatenate(
        [
            np.full((t, pre_len), IGNORE_INDEX, dtype=np.int64),
            np.where(sup, example, IGNORE_INDEX).reshape(t, k * ex_len),
        ],
        axis=1,
    )
    sections = np.concatenate([pre_sec, np.tile(sec, k)])
    keep = ~(think[None, None, :] & ~has_cot[:, :, None])  # (T, K, ex_len)
    train_keep = np.concatenate([np.ones((t, pre_len), dtype=bool), keep.reshape(t, -1)], axis=1)

    ev = has_cot if eval_has_cot is None else eval_has_cot
    eval_keep = ~(think[None, None, :] & ~ev[:, :, None])
    eval_keep[:, -1, :] &= prompt_col  # last example: only its prompt columns
    eval_keep = np.concatenate([np.ones((t, pre_len), dtype=bool), eval_keep.reshape(t, -1)], axis=1)
    target_keep = keep[:, -1, :] & sup

    return Rendered(
        input_ids=_ragged(ids, train_keep),
        labels=_ragged(labels, train_keep),
        section_ids=_ragged(np.broadcast_to(sections, ids.shape), train_keep),
        eval_input_ids=_ragged(ids, eval_keep),
        eval_target_ids=_ragged(example[:, -1, :], target_keep),
    )
