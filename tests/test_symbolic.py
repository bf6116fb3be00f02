"""Symbolic word tasks: the definition, the chat rendering and determinism."""

from __future__ import annotations

import re

import pytest

from hf_cot_distill.data.synthetic.schedules import CoTSchedule
from hf_cot_distill.data.synthetic.symbolic import (
    SymbolicConfig,
    chain_word,
    generate_symbolic_task,
    shift_word,
)


def test_shift_and_chain_word_by_hand():
    assert shift_word("abz", 1) == "bca"
    assert shift_word("abc", -1) == "zab"
    # second halves "efgh" + "mnop", shifted by one
    assert chain_word(["abcdefgh", "ijklmnop"], 1) == "fghinopq"


def test_every_chain_word_follows_the_definition():
    config = SymbolicConfig(n_examples=6, seed=4)
    for idx in range(20):
        task = generate_symbolic_task(config, idx)
        for inputs, chain in zip(task["input_words"], task["chain_words"]):
            words = list(inputs)
            assert all(re.fullmatch("[a-z]{8}", w) for w in words)
            for j, parents in enumerate(task["dag"]):
                assert parents == sorted(parents) and len(set(parents)) == 2 and max(parents) < 4 + j
                expected = shift_word("".join(words[p][4:] for p in parents), 1)
                assert chain[j] == expected
                words.append(expected)
        assert task["answer"] == task["chain_words"][-1][-1]


def test_messages_layout_and_boxed_answers():
    config = SymbolicConfig(n_examples=5, cot_example_prob=0.5, seed=2)
    task = generate_symbolic_task(config, 1)
    msgs = task["messages"]
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 5
    assert "### Reasoning" in msgs[0]["content"] and "{think}" not in msgs[0]["content"]
    for e, flag in enumerate(task["example_has_cot"]):
        user, answer = msgs[1 + 2 * e]["content"], msgs[2 + 2 * e]["content"]
        assert user == "Input words: " + " ".join(task["input_words"][e])
        chain = task["chain_words"][e]
        assert answer.endswith(f"### Answer\n\\boxed{{{chain[-1]}}}")
        if flag:
            assert answer.startswith("### Reasoning\nStep 1: " + chain[0] + "\nStep 2: " + chain[1] + "\n")
        else:
            assert answer == f"### Answer\n\\boxed{{{chain[-1]}}}"
    assert any(task["example_has_cot"]) and not all(task["example_has_cot"])


def test_recipe_schedule_and_determinism():
    config = SymbolicConfig(n_examples=40, num_tasks=100, cot_schedule=CoTSchedule(alpha=1.0))
    assert generate_symbolic_task(config, 0)["cot_example_prob"] == 0.0
    assert not any(generate_symbolic_task(config, 0)["example_has_cot"])
    assert generate_symbolic_task(config, 50)["cot_example_prob"] == pytest.approx(0.5)
    assert generate_symbolic_task(config, 7) == generate_symbolic_task(config, 7)
    assert generate_symbolic_task(config, 7) != generate_symbolic_task(config, 7, split="eval")


def test_custom_system_prompt_may_contain_braces():
    config = SymbolicConfig(n_examples=1, system_prompt="Use {think} then {answer}; json: {}")
    assert (
        generate_symbolic_task(config, 0)["messages"][0]["content"]
        == "Use ### Reasoning then ### Answer; json: {}"
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(word_length=1), "word_length"),
        (dict(n_parents=5), "n_parents"),
        (dict(n_examples=0), "n_examples"),
        (dict(num_eval_tasks=-1), "num_eval_tasks=-1: must be an int >= 0"),
        (dict(seed=0.5), "seed=0.5: must be an int >= 0"),
        (dict(shift=1.5), "shift=1.5: must be an int"),
    ],
)
def test_bad_symbolic_configs(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SymbolicConfig(**kwargs)


def test_negative_task_index_is_refused_as_in_cot_icl_lab():
    with pytest.raises(ValueError, match="task_index=-1: must be an int >= 0"):
        generate_symbolic_task(SymbolicConfig(n_examples=1), -1)
