"""Token-exact layouts of every prompt strategy on a hand-worked example (K=2, N=2, C=2, V=20)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_cot_distill.data import CoTICLConfig, eval_view, generate_batch
from hf_cot_distill.data.synthetic.cot_icl_lab import SpecialTokens
from hf_cot_distill.data.synthetic.prompts import get_strategy, render

X = -100
P, C, A = 1, 2, 3
# Example 0: inputs 1 2, chain 3 4 (CoT 3, answer 4); example 1: inputs 5 6, chain 7 8.
TOKENS = np.array([[[1, 2, 3, 4], [5, 6, 7, 8]]])
ST = SpecialTokens.for_vocab(20)
# pad 19, bos 18, eos 17, <in> 16, </in> 15, <think> 14, </think> 13, <ans> 12, </ans> 11
assert (ST.pad, ST.bos, ST.eos, ST.input_start, ST.answer_end) == (19, 18, 17, 16, 11)

EXPECTED = {
    "standard": dict(
        ids=[1, 2, 4, 5, 6, 8],
        labels=[X, X, 4, X, X, 8],
        sections=[P, P, A, P, P, A],
        eval_ids=[1, 2, 4, 5, 6],
        target=[8],
    ),
    "cot": dict(
        ids=[1, 2, 3, 4, 5, 6, 7, 8],
        labels=[X, X, 3, 4, X, X, 7, 8],
        sections=[P, P, C, A, P, P, C, A],
        eval_ids=[1, 2, 3, 4, 5, 6],
        target=[7, 8],
    ),
    "standard_special_token": dict(
        ids=[18, 16, 1, 2, 15, 12, 4, 11, 17, 16, 5, 6, 15, 12, 8, 11, 17],
        labels=[X, X, X, X, X, 12, 4, 11, 17, X, X, X, X, 12, 8, 11, 17],
        sections=[P, P, P, P, P, A, A, A, A, P, P, P, P, A, A, A, A],
        eval_ids=[18, 16, 1, 2, 15, 12, 4, 11, 17, 16, 5, 6, 15],
        target=[12, 8, 11, 17],
    ),
    "cot_special_token": dict(
        ids=[18, 16, 1, 2, 15, 14, 3, 13, 12, 4, 11, 17, 16, 5, 6, 15, 14, 7, 13, 12, 8, 11, 17],
        labels=[X, X, X, X, X, 14, 3, 13, 12, 4, 11, 17, X, X, X, X, 14, 7, 13, 12, 8, 11, 17],
        sections=[P, P, P, P, P, C, C, C, A, A, A, A, P, P, P, P, C, C, C, A, A, A, A],
        eval_ids=[18, 16, 1, 2, 15, 14, 3, 13, 12, 4, 11, 17, 16, 5, 6, 15],
        target=[14, 7, 13, 12, 8, 11, 17],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout_is_token_exact(name):
    strategy = get_strategy(name)
    st = ST if strategy.uses_special_tokens else None
    has_cot = np.full((1, 2), strategy.carries_cot)
    out = render(strategy, TOKENS, 2, has_cot, st)
    exp = EXPECTED[name]
    assert out.input_ids.row(0).tolist() == exp["ids"]
    assert out.labels.row(0).tolist() == exp["labels"]
    assert out.section_ids.row(0).tolist() == exp["sections"]
    assert out.eval_input_ids.row(0).tolist() == exp["eval_ids"]
    assert out.eval_target_ids.row(0).tolist() == exp["target"]


def test_hybrid_drops_the_think_block_per_example():
    strategy = get_strategy("hybrid_special_token")
    out = render(strategy, TOKENS, 2, np.array([[False, True]]), ST)
    assert out.input_ids.row(0).tolist() == [
        *[18, 16, 1, 2, 15, 12, 4, 11, 17],  # example 0 without its think block
        *[16, 5, 6, 15, 14, 7, 13, 12, 8, 11, 17],  # example 1 with it
    ]
    assert out.section_ids.row(0).tolist() == [P] * 5 + [A] * 4 + [P] * 4 + [C] * 3 + [A] * 4
    assert out.eval_target_ids.row(0).tolist() == [14, 7, 13, 12, 8, 11, 17]


def test_eval_flags_drop_context_think_blocks_only():
    strategy = get_strategy("cot_special_token")
    out = render(strategy, TOKENS, 2, np.ones((1, 2), bool), ST, eval_has_cot=np.array([[False, True]]))
    assert out.eval_input_ids.row(0).tolist() == [18, 16, 1, 2, 15, 12, 4, 11, 17, 16, 5, 6, 15]
    assert out.input_ids.row(0).tolist() == EXPECTED["cot_special_token"]["ids"]  # training view unchanged


def test_batched_ragged_rows_match_single_renders():
    strategy = get_strategy("hybrid_special_token")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, size=(5, 4, 5))
    flags = rng.random((5, 4)) < 0.5
    out = render(strategy, tokens, 3, flags, ST)
    for t in range(5):
        single = render(strategy, tokens[t : t + 1], 3, flags[t : t + 1], ST)
        assert out.input_ids.row(t).tolist() == single.input_ids.row(0).tolist()
        assert out.labels.row(t).tolist() == single.labels.row(0).tolist()
        think_blocks = int((out.input_ids.row(t) == ST.think_start).sum())
        assert think_blocks == int(flags[t].sum())


def test_generated_rows_are_consistent():
    for strategy in (
        "standard",
        "cot",
        "standard_special_token",
        "cot_special_token",
        "hybrid_special_token",
    ):
        config = CoTICLConfig(prompt_strategy=strategy, n_examples_choices=(5,), cot_example_prob=0.5)
        for row in generate_batch(config, range(10)).rows():
            n = len(row["input_ids"])
            assert len(row["labels"]) == len(row["section_ids"]) == len(row["attention_mask"]) == n
            assert all(s in (P, C, A) for s in row["section_ids"])
            supervised = [i for i, lab in zip(row["input_ids"], row["labels"]) if lab != X]
            assert supervised == [lab for lab in row["labels"] if lab != X]  # labels are the tokens
            assert all(s != P for s, lab in zip(row["section_ids"], row["labels"]) if lab != X)
            # The eval view splits the training sequence: context + target == the whole sequence.
            assert row["eval_input_ids"] + row["eval_target_ids"] == row["input_ids"]
            assert row["answer"] == row["example_chains"][-1][-1]
            answer_pos = -3 if config.uses_special_tokens else -1  # ... a </ans> <eos>
            assert row["eval_target_ids"][answer_pos] == row["answer"]
            ctx, target = eval_view(config, row)
            assert ctx == row["eval_input_ids"] and target == row["eval_target_ids"]
